"""Test packages; this file keeps tests/<part>/ from shadowing the product packages (tests/vendors vs vendors)."""
