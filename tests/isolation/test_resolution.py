"""Entry-point resolution as the CUDA 13 runtime does it (reference isolation.md §1.6, Appendix A):
the look-ups libcudart 13.0 makes at start-up, replayed through cuGetProcAddress_v2 in a plain and
in a preloaded process. With libvgpu every look-up must end on the same variant the driver chose
(same export name, result and status), on libvgpu's wrapper for what it wraps and on the driver's
own pointer for everything else."""

from __future__ import annotations

import re
import subprocess

from .fakegpu import BUILD, FakeNode

REPLAY = BUILD / "tests" / "gpa-replay"

# name@version, "+ptds": also asked with the per-thread-stream flag, "ptds": only with it
CUDART13 = """
-@0 cuInit@2000 cuDriverGetVersion@2020 cuGetProcAddress@11030 cuGetProcAddress@12000 cuDeviceGet@2000
cuDeviceGetCount@2000 cuDeviceGetAttribute@2000 cuDeviceTotalMem@3020 cuDeviceGetDefaultMemPool@11020
cuDeviceGetMemPool@11020 cuDeviceSetMemPool@11020 cuDeviceGraphMemTrim@11040 cuDevicePrimaryCtxRetain@7000
cuDevicePrimaryCtxRelease@7000 cuDevicePrimaryCtxGetState@7000 cuDevicePrimaryCtxReset@7000
cuDevicePrimaryCtxSetFlags@11000 cuCtxCreate@3020 cuCtxGetDevice@2000 cuCtxGetDevice@13000
cuCtxSynchronize@2000 cuCtxSynchronize@13000 cuMemAlloc@3020 cuMemFree@3020 cuMemGetInfo@3020
cuMemAllocPitch@3020 cuMemAllocManaged@6000 cuMemGetAddressRange@3020 cuMemHostAlloc@2020 cuMemFreeHost@2000
cuMemHostRegister@6050 cuMemHostUnregister@4000 cuMemHostGetDevicePointer@3020 cuMemHostGetFlags@2030
cuMemAllocAsync@11020+ptds cuMemFreeAsync@11020+ptds cuMemAllocFromPoolAsync@11020+ptds cuMemPoolCreate@11020
cuMemPoolDestroy@11020 cuMemPoolGetAttribute@11020 cuMemPoolSetAttribute@11020 cuMemPoolTrimTo@11020
cuMemPoolGetAccess@11020 cuMemPoolSetAccess@11020 cuMemPoolExportPointer@11020 cuMemPoolImportPointer@11020
cuMemGetDefaultMemPool@13000 cuMemGetMemPool@13000 cuMemSetMemPool@13000 cuMemAdvise@8000 cuMemAdvise@12020
cuMemPrefetchAsync@8000+ptds cuMemPrefetchAsync@12020+ptds cuMemRangeGetAttribute@8000 cuMemcpy@4000
cuMemcpy@7000ptds cuMemcpyAsync@4000 cuMemcpyAsync@7000ptds cuMemsetD8@3020 cuMemsetD8@7000ptds
cuMemcpyHtoD@3020 cuMemcpyHtoD@7000ptds cuArrayCreate@3020 cuArray3DCreate@3020 cuArrayDestroy@2000
cuMipmappedArrayCreate@5000 cuMipmappedArrayDestroy@5000 cuIpcGetMemHandle@4010 cuIpcOpenMemHandle@4010
cuIpcOpenMemHandle@11000 cuIpcCloseMemHandle@4010 cuPointerGetAttribute@4000 cuPointerGetAttributes@7000
cuLaunchKernel@4000 cuLaunchKernel@7000ptds cuLaunchKernelEx@11060+ptds cuLaunchCooperativeKernel@9000+ptds
cuLaunchHostFunc@10000+ptds cuGraphInstantiate@10000 cuGraphInstantiate@11000 cuGraphInstantiateWithFlags@11040
cuGraphInstantiateWithParams@12000+ptds cuGraphLaunch@10000+ptds cuGraphUpload@11010+ptds
cuGraphAddMemAllocNode@11040 cuGraphAddMemFreeNode@11040 cuGraphExecUpdate@12000 cuStreamBeginCapture@10000
cuStreamEndCapture@10000+ptds cuStreamSynchronize@2000 cuStreamSynchronize@7000ptds cuModuleLoad@2000
cuModuleLoadData@2000 cuModuleLoadFatBinary@2000 cuLibraryLoadData@12000 cuLibraryGetKernel@12000
cuKernelGetFunction@12000 cuMemCreate@10020 cuMemRelease@10020 cuMemMap@10020 cuMemUnmap@10020
cuMemAddressReserve@10020 cuMemSetAccess@10020 cuMemGetAllocationGranularity@10020 cuNoSuchEntryPoint@13000
"""

WRAPPED_EXPORTS = {
    "cuInit",
    "cuGetProcAddress",
    "cuGetProcAddress_v2",
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuMemAllocManaged",
    "cuMemAllocPitch_v2",
    "cuMemGetInfo_v2",
    "cuDeviceTotalMem_v2",
    "cuMemAllocAsync",
    "cuMemAllocAsync_ptsz",
    "cuMemAllocFromPoolAsync",
    "cuMemAllocFromPoolAsync_ptsz",
    "cuMemPoolCreate",
    "cuMemPoolDestroy",
    "cuMemPoolTrimTo",
    "cuStreamSynchronize",
    "cuStreamSynchronize_ptsz",
    "cuCtxSynchronize",
    "cuCtxSynchronize_v2",
    "cuMemCreate",
    "cuMemRelease",
    "cuArrayCreate_v2",
    "cuArray3DCreate_v2",
    "cuArrayDestroy",
    "cuMipmappedArrayCreate",
    "cuMipmappedArrayDestroy",
    "cuLaunchKernel",
    "cuLaunchKernel_ptsz",
    "cuLaunchKernelEx",
    "cuLaunchKernelEx_ptsz",
    "cuLaunchCooperativeKernel",
    "cuLaunchCooperativeKernel_ptsz",
    "cuGraphInstantiateWithFlags",
    "cuGraphInstantiateWithParams",
    "cuGraphInstantiateWithParams_ptsz",
    "cuGraphExecDestroy",
    "cuGraphLaunch",
    "cuGraphLaunch_ptsz",
}


def _lookups() -> list[tuple[str, int, int]]:
    out = []
    for tok in CUDART13.split():
        m = re.fullmatch(r"([\w-]+)@(\d+)(\+ptds|ptds)?", tok)
        assert m, tok
        name, ver, mode = m.group(1), int(m.group(2)), m.group(3)
        if mode != "ptds":
            out.append((name, ver, 0))
        if mode:
            out.append((name, ver, 2))
    return out


def _replay(env: dict[str, str]) -> list[list[str]]:
    text = "".join(f"{n} {v} {f}\n" for n, v, f in _lookups())
    done = subprocess.run([str(REPLAY)], input=text, env=env, capture_output=True, text=True, timeout=30, check=True)
    return [line.split() for line in done.stdout.splitlines()]


def test_cudart13_lookups_end_on_the_drivers_variant(node: FakeNode) -> None:
    plain = _replay(node.base_env | {"NVIDIA_VISIBLE_DEVICES": node.uuids[0]})
    hooked = _replay(node.container("gpa", CUDA_DEVICE_MEMORY_LIMIT_0="1g"))
    assert len(plain) == len(hooked) == len(_lookups()) > 100
    wrapped = 0
    for p, h in zip(plain, hooked, strict=True):
        name, ver, flags, result, status, lib, sym = h
        assert (result, status, sym) == (p[3], p[4], p[6]), f"{name}@{ver}/{flags}: {p} vs {h}"
        if sym in WRAPPED_EXPORTS:
            assert lib == "libvgpu.so", f"{name}@{ver}/{flags} -> {sym} should be wrapped"
            wrapped += 1
        else:
            assert lib == p[5], f"{name}@{ver}/{flags}: not ours, must be the driver's pointer"
    assert wrapped >= 30
    by_key = {(r[0], r[1], r[2]): r for r in hooked}
    assert by_key[("cuLaunchKernel", "7000", "2")][6] == "cuLaunchKernel_ptsz"
    assert by_key[("cuMemAdvise", "8000", "0")][6] == "cuMemAdvise"
    assert by_key[("cuMemAdvise", "12020", "0")][6] == "cuMemAdvise_v2"
    assert by_key[("cuCtxGetDevice", "13000", "0")][6] == "cuCtxGetDevice_v2"
    assert by_key[("cuNoSuchEntryPoint", "13000", "0")][4:] == ["1", "-", "-"]
