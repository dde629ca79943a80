"""The fast engine's CUDA kernels, compiled for an H100/H200 (sm_90) without a GPU.

On CuPy the engine runs its fused passes as ElementwiseKernels (minisae/fast/kernels.py
`_CUPY_KERNELS`, minisae/fast/adam.py `_ADAM_KERNEL`), whose bodies are CUDA C++ in Python
strings: nothing compiles them until a GPU runs them. This test compiles each one, in float32
and float64, with NVRTC (the compiler CuPy itself uses), which needs no GPU and no driver.

The source compiled is CuPy's own: the code an ElementwiseKernel generates for arrays of that
dtype (CuPy's internal generator, which needs no device), with CuPy's headers and compiler
options. Where a CuPy version has moved that internal, the test builds the kernel the way
an ElementwiseKernel does (one __global__ loop over the elements, `T` typedef'd, each
parameter bound by reference to its element) and says so in the skip reason of the
"cupy" variant.

What this catches: anything the CUDA compiler refuses (a typo, an undeclared name, a
missing semicolon, a write to an input, an ambiguous overload for float and double), and a
float32 kernel that does its arithmetic in double (a bare 0.5 literal: slow on a GPU, and
not the reference's rounding). What it cannot catch: wrong numbers, the Python call's
arguments (their number, order and dtypes are checked by CuPy when it runs), broadcasting,
launch failures, and anything about speed; tests/test_fast.py checks the numbers on a GPU.

Needs CuPy and its NVRTC: pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12 (skipped without).
"""
import re

import pytest

from minisae.fast import adam, kernels

pytestmark = pytest.mark.cuda_compile

ARCH = "sm_90"
"""H100 and H200 (compute capability 9.0)."""
DTYPES = {"float32": "float", "float64": "double"}


def kernel_table():
    """Every CUDA kernel of the engine, by name: (in_params, out_params, operation)."""
    return {**kernels._CUPY_KERNELS, **adam._ADAM_KERNEL}


KERNEL_NAMES = sorted(kernel_table())


@pytest.fixture(scope="module")
def nvrtc():
    """CuPy's NVRTC bindings, or a skip saying what is missing."""
    pytest.importorskip("cupy", reason="CuPy is not installed (pip install cupy-cuda12x "
                                       "nvidia-cuda-nvrtc-cu12)")
    from cupy.cuda import nvrtc
    try:
        nvrtc.getVersion()
    except Exception as e:  # the NVRTC library is missing or cannot load
        why = " ".join(str(e).split())
        pytest.skip(f"CuPy's NVRTC cannot load ({type(e).__name__}: {why}); "
                    f"pip install nvidia-cuda-nvrtc-cu12")
    return nvrtc


class CompileError(Exception):
    """NVRTC refused the source; the message is its log."""


def compile_source(nvrtc, source, name, options=()):
    """NVRTC's PTX (text) and CUBIN (bytes) of `source` for ARCH, or CompileError."""
    program = nvrtc.createProgram(source, f"{name}.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(program, [*options, f"--gpu-architecture={ARCH}"])
        except nvrtc.NVRTCError as e:
            raise CompileError(f"{name}: {e}\n{nvrtc.getProgramLog(program)}") from None
        ptx = nvrtc.getPTX(program)
        return (ptx.decode() if isinstance(ptx, bytes) else ptx), nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)


def cupy_source(name, dtype):
    """(source, options): the code CuPy generates for ElementwiseKernel `name` called on
    contiguous arrays of `dtype` (every parameter T, as minisae calls them), with CuPy's
    headers and options. Raises AttributeError/TypeError/ImportError where CuPy's internals
    differ from the version this was written against (13, 14)."""
    import cupy
    import numpy as np
    from cupy._core import _carray, _kernel
    from cupy._core import core as cupy_core
    in_params, out_params, operation = kernel_table()[name]
    kernel = cupy.ElementwiseKernel(in_params, out_params, operation, "minisae_" + name)
    dt = np.dtype(dtype)
    _, _, type_map = _kernel._decide_params_type(kernel.in_params, kernel.out_params,
                                                 (dt,) * kernel.nin, (dt,) * kernel.nout)
    ndarray, indexer = 1, 2  # _kernel._ArgKind: ARG_KIND_NDARRAY, ARG_KIND_INDEXER
    infos = tuple(_kernel._ArgInfo(ndarray, cupy.ndarray, dt, 1, True, True)
                  for _ in range(kernel.nargs))
    infos += (_kernel._ArgInfo(indexer, _carray.Indexer, None, 1, True, True),)
    code = _kernel._get_elementwise_kernel_code(infos, type_map, kernel.params,
                                                kernel.operation, kernel.name, kernel.preamble)
    headers = "".join(f"#include <{h}>\n" for h in cupy_core._cupy_header_list)
    return headers + code, tuple(cupy_core.assemble_cupy_compiler_options(()))


def own_source(name, dtype):
    """(source, options): the kernel as an ElementwiseKernel builds it, written here: a
    grid-stride loop over n elements, T typedef'd, each parameter a reference to its
    element (inputs const), the operation followed by a ";" as CuPy writes it."""
    in_params, out_params, operation = kernel_table()[name]

    def names(params):
        return [p.split()[-1] for p in params.split(",") if p.strip()]

    ins, outs = names(in_params), names(out_params)
    args = ", ".join([f"const T* _raw_{p}" for p in ins] + [f"T* _raw_{p}" for p in outs])
    bind = "\n".join([f"    const T& {p} = _raw_{p}[i];" for p in ins] +
                     [f"    T& {p} = _raw_{p}[i];" for p in outs])
    source = f"""typedef {DTYPES[dtype]} T;
extern "C" __global__ void minisae_{name}({args}, long long n) {{
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {{
{bind}
    {operation};
  }}
}}
"""
    return source, ("--std=c++17",)


def source_for(name, dtype, how):
    if how == "own":
        return own_source(name, dtype)
    try:
        return cupy_source(name, dtype)
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        pytest.skip(f"CuPy's kernel generator is not reachable in this CuPy version "
                    f"({type(e).__name__}: {e}); the 'own' variant still compiles each kernel")


def double_ops(ptx):
    """The PTX instructions that compute in double (add.f64, cvt.f64.f32, ...)."""
    return sorted(set(re.findall(r"^\s*([a-z]+(?:\.[a-z0-9]+)*\.f64\b[.a-z0-9]*)", ptx,
                                 re.MULTILINE)))


@pytest.mark.parametrize("how", ["cupy", "own"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_kernel_compiles_for_sm90(nvrtc, name, dtype, how):
    source, options = source_for(name, dtype, how)
    ptx, cubin = compile_source(nvrtc, source, name, options)
    assert f"minisae_{name}" in ptx and len(cubin) > 0
    assert f".target {ARCH}" in ptx
    if dtype == "float32":  # float32 math stays float32: no bare double literal slipped in
        assert double_ops(ptx) == [], f"{name} computes in double in float32: {double_ops(ptx)}"


def test_every_engine_kernel_is_checked():
    assert {"bias_sigmoid", "sigmoid_mse_head", "linear_mse_head", "sigmoid_bce_head",
            "sigmoid_backward", "bias_relu", "relu_backward", "add_scaled",
            "adam"} <= set(KERNEL_NAMES)


# ----------------------------------------------------------------------------- the check works

@pytest.mark.parametrize("how", ["cupy", "own"])
def test_a_typo_in_a_kernel_fails_to_compile(nvrtc, monkeypatch, how):
    in_params, out_params, operation = kernels._CUPY_KERNELS["bias_sigmoid"]
    monkeypatch.setitem(kernels._CUPY_KERNELS, "bias_sigmoid",
                        (in_params, out_params, operation.replace("tanh(", "tahn(")))
    source, options = source_for("bias_sigmoid", "float32", how)
    with pytest.raises(CompileError, match="tahn"):
        compile_source(nvrtc, source, "bias_sigmoid", options)


@pytest.mark.parametrize("how", ["cupy", "own"])
def test_writing_an_input_fails_to_compile(nvrtc, monkeypatch, how):
    in_params, out_params, _ = adam._ADAM_KERNEL["adam"]
    monkeypatch.setitem(adam._ADAM_KERNEL, "adam", (in_params, out_params, "g = p; p = m;"))
    source, options = source_for("adam", "float64", how)
    with pytest.raises(CompileError):  # g is an input: a const reference
        compile_source(nvrtc, source, "adam", options)


@pytest.mark.parametrize("how", ["cupy", "own"])
def test_a_double_literal_in_a_float32_kernel_is_found(nvrtc, monkeypatch, how):
    monkeypatch.setitem(kernels._CUPY_KERNELS, "add_scaled",
                        ("T W, T lam", "T dW", "dW += lam * W * 0.5;"))
    source, options = source_for("add_scaled", "float32", how)
    ptx, _ = compile_source(nvrtc, source, "add_scaled", options)
    assert any(op.startswith(("mul.", "fma.", "cvt.")) for op in double_ops(ptx))
