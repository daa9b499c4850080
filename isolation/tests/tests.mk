# C test programs (included by ../Makefile)
LIBSRC_UNIT := libvgpu/env.c libvgpu/log.c
$(B)/tests/test_env: tests/test_env.c $(LIBSRC_UNIT) $(LIB_HDR) tests/check.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_) -D_GNU_SOURCE $(SAN) -o $@ tests/test_env.c $(LIBSRC_UNIT)

$(B)/tests/test_limits: tests/test_limits.c libvgpu/limits.c $(LIBSRC_UNIT) $(LIB_HDR) tests/check.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_) -D_GNU_SOURCE $(SAN) -o $@ tests/test_limits.c libvgpu/limits.c $(LIBSRC_UNIT)

$(B)/tests/test_region: tests/test_region.c libvgpu/region.c $(LIBSRC_UNIT) $(LIB_HDR) tests/check.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_) -D_GNU_SOURCE $(SAN) -o $@ tests/test_region.c libvgpu/region.c $(LIBSRC_UNIT)

$(B)/tests/libnextprobe.so: tests/next_probe.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_) $(SAN) -shared -o $@ tests/next_probe.c -ldl

$(B)/tests/test_hooks: tests/test_hooks.c tools/drv.c tests/fake/fake_state.c $(B)/tests/libnextprobe.so $(TOOL_HDR) $(FAKE_HDR) tests/check.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_) $(SAN) -o $@ tests/test_hooks.c tools/drv.c tests/fake/fake_state.c -L$(B)/tests -lnextprobe -Wl,-rpath,'$$ORIGIN' -ldl

# the direct route: linked against the fake libcuda.so.1 as NCCL links the real one
$(B)/tests/test_direct: tests/test_hooks.c tools/drv.c tools/drv_direct.c tests/fake/fake_state.c $(B)/fake/libcuda.so.1 $(B)/tests/libnextprobe.so $(TOOL_HDR) tests/check.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_) $(SAN) -o $@ tests/test_hooks.c tools/drv.c tools/drv_direct.c tests/fake/fake_state.c -L$(B)/fake -lcuda -L$(B)/tests -lnextprobe -Wl,-rpath,'$$ORIGIN' -ldl

$(B)/tests/alloc-stress: tests/alloc_stress.c tools/drv.c $(TOOL_HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_) $(SAN) -o $@ tests/alloc_stress.c tools/drv.c -ldl

$(B)/tests/vgpu-bench: tests/vgpu_bench.c tools/drv.c $(TOOL_HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_) $(SAN) -o $@ tests/vgpu_bench.c tools/drv.c -ldl

$(B)/tests/gpa-replay: tests/gpa_replay.c include/cuabi.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_) $(SAN) -o $@ tests/gpa_replay.c -ldl
