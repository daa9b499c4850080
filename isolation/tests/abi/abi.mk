# abi-check (included by ../../Makefile): our hand-written CUDA and NVML declarations against the
# toolkit's headers. Skipped, saying so, where no toolkit is installed; nvml.h comes from the toolkit
# or from the nvidia-nvml-dev wheel in the project's .venv (installed by `make setup`).
CUDA_HOME ?= /usr/local/cuda
ABI_CUDA_INC := $(CUDA_HOME)/include
NVML_INC ?= $(patsubst %/nvml.h,%,$(firstword $(wildcard $(ABI_CUDA_INC)/nvml.h \
                ../.venv/lib/python3*/site-packages/nvidia/cu*/include/nvml.h)))
ABI_CC ?= gcc
ABI_B := $(B)/abi
ABI_NVML := $(if $(NVML_INC),1,0)
ABI_FLAGS = $(CSTD) $(WARN) -DTESSERA_ABI_NVML=$(ABI_NVML) -I$(ABI_B) -Itests/abi -isystem $(ABI_CUDA_INC) \
            $(if $(NVML_INC),-isystem $(NVML_INC))
FAKE_SRC := tests/fake/fake_cuda.c $(if $(NVML_INC),tests/fake/fake_nvml.c)

.PHONY: abi-check
ifeq ($(wildcard $(ABI_CUDA_INC)/cudaTypedefs.h),)
abi-check:
	@echo "abi-check: skipped: no CUDA toolkit headers in $(ABI_CUDA_INC) (install the toolkit or set CUDA_HOME)"
else
# Everything is regenerated on each run (a second or two): the outcome depends on the toolkit found.
abi-check:
	@$(if $(NVML_INC),,echo "abi-check: NVML skipped: no nvml.h in $(ABI_CUDA_INC) or .venv (run make setup, or set NVML_INC)")
	@mkdir -p $(ABI_B)
	@# cuabi.h's enumerators, listed from the header itself
	grep -oE '\bCUDA?_[A-Z0-9_]+ *=' include/cuabi.h | sed -E 's/ *=$$//; s/.*/ABI_ENTRY(&)/' > $(ABI_B)/cuda_enumerators.h
	grep -oE '\bNVML_[A-Z0-9_]+ *=' include/cuabi.h | sed -E 's/ *=$$//; s/.*/ABI_ENTRY(&)/' > $(ABI_B)/nvml_enumerators.h
	@# the fakes' entry points as the compiler saw their definitions (gcc -aux-info; NF: defined here)
	rm -f $(ABI_B)/fake_protos.h $(ABI_B)/fake_names.h
	for src in $(FAKE_SRC); do \
	    $(ABI_CC) $(CSTD) -fsyntax-only -aux-info $(ABI_B)/fake.aux $$src || exit 1; \
	    sed -n "s@^/\* $$src:[0-9]*:NF \*/ extern \([^(]* \(cu\|nvml\)[A-Za-z0-9_]* (.*)\); /\*.*@\1;@p" \
	        $(ABI_B)/fake.aux >> $(ABI_B)/fake_protos.h; \
	    sed -n "s@^/\* $$src:[0-9]*:NF \*/ extern [^(]* \(\(cu\|nvml\)[A-Za-z0-9_]*\) (.*@FAKE_ENTRY(\1)@p" \
	        $(ABI_B)/fake.aux >> $(ABI_B)/fake_names.h; \
	done
	@test -s $(ABI_B)/fake_names.h || { echo "abi-check: no entry points found in $(FAKE_SRC)"; exit 1; }
	$(ABI_CC) $(ABI_FLAGS) -fsyntax-only tests/abi/check_hooks.c
	$(ABI_CC) $(ABI_FLAGS) -fsyntax-only tests/abi/check_fake.c
	$(ABI_CC) $(ABI_FLAGS) -c -o $(ABI_B)/layout_real.o tests/abi/layout_real.c
	$(ABI_CC) $(CSTD) $(WARN) -DTESSERA_ABI_NVML=$(ABI_NVML) -I$(ABI_B) -c -o $(ABI_B)/layout_ours.o tests/abi/layout_ours.c
	$(ABI_CC) $(CSTD) $(WARN) -DTESSERA_ABI_NVML=$(ABI_NVML) -o $(ABI_B)/layout-check tests/abi/layout_check.c \
	    $(ABI_B)/layout_ours.o $(ABI_B)/layout_real.o
	@$(ABI_B)/layout-check
	@echo "abi-check: the wrappers of libvgpu and the $$(grep -c . $(ABI_B)/fake_names.h) entry points of the fake driver have the toolkit's signatures ($(ABI_CUDA_INC)$(if $(NVML_INC), and $(NVML_INC)))"
endif
