"""Build fastdistill's native extensions.

* ``fastdistill._C``: the kernel drivers and scalar tier (``csrc/cpu/*.cpp``, plain C++), the pybind11 glue
  (``csrc/bind/*.cpp``, the only units that include pybind11) and, when the target is x86-64, the AVX2 / AVX-512 /
  AMX tiers (``csrc/cpu/x86/*.cpp``, the only units with intrinsics and ``#pragma GCC target``; chosen at run time),
  or, when the target is aarch64, the NEON / NEON dot-product tiers (``csrc/cpu/arm/*.cpp``).
  C++17, -O3, OpenMP, no debug info, stripped; no ``-march=native``. Sources compile in parallel on every core
  (``FASTDISTILL_BUILD_JOBS`` overrides the count).
* ``fastdistill._cuda``: every ``csrc/cuda/*.cu`` file, built with nvcc. By default only where a GPU is visible at
  build time (for its compute capability); ``FASTDISTILL_CUDA=1`` requires it (the build fails loudly without nvcc),
  ``FASTDISTILL_CUDA_ARCH`` ("80 90", or raw nvcc ``-gencode`` flags) builds it for those architectures, and
  ``FASTDISTILL_CUDA=0`` skips it.

A failed native build never fails the install (unless ``FASTDISTILL_NATIVE=1``): the package then runs on its Numba
and pure-Python backends, and ``fastdistill info`` reports why the native module is missing (the reason is written
to ``_build_status.json``).
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
STATUS_FILE = os.path.join("fastdistill", "_build_status.json")
JOBS_ENV = "FASTDISTILL_BUILD_JOBS"
CUDA_HINT = ("to build it, reinstall where nvcc is installed with FASTDISTILL_CUDA=1 (and FASTDISTILL_CUDA_ARCH, e.g. "
             "'80 90', when no GPU is visible at build time)")


def _pybind_include() -> str:
    import pybind11

    return pybind11.get_include()


def _build_jobs() -> int:
    return int(os.environ.get(JOBS_ENV, 0)) or os.cpu_count() or 1


def _install_parallel_compile() -> None:
    """Compile an extension's sources on every core (setuptools compiles one extension's sources one by one)."""
    try:
        from pybind11.setup_helpers import ParallelCompile
    except ImportError:  # an old pybind11: serial compile
        return
    ParallelCompile(JOBS_ENV).install()


def _target_is_x86() -> bool:
    # sysconfig's platform honours cross-compilation settings (_PYTHON_HOST_PLATFORM); e.g. linux-x86_64
    plat = sysconfig.get_platform().lower()
    return any(tag in plat for tag in ("x86_64", "amd64", "win-amd64"))


def _target_is_arm64() -> bool:
    plat = sysconfig.get_platform().lower()  # e.g. linux-aarch64, macosx-11.0-arm64
    return "aarch64" in plat or "arm64" in plat


def _find_nvcc():
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [os.path.join(cuda_home, "bin", "nvcc")] if cuda_home else []
    candidates += [shutil.which("nvcc") or "", "/usr/local/cuda/bin/nvcc"]
    for path in candidates:
        if path and os.path.exists(path):
            return path
    return None


def _visible_gpu_archs():
    """Compute capabilities of the GPUs visible now (e.g. ["90"]), [] when none is."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return sorted({line.strip().replace(".", "") for line in out.stdout.splitlines() if line.strip()})


def _gencode_flags(archs):
    """nvcc flags for compute capabilities like ["80", "90"]: SASS for each, PTX of the newest for later GPUs."""
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    return flags + [f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}"]


def _cuda_plan():
    """(nvcc flags for the architectures to build, or None to skip; the reason for a skip)."""
    mode = os.environ.get("FASTDISTILL_CUDA", "auto")
    arch = os.environ.get("FASTDISTILL_CUDA_ARCH", "").strip()
    if mode == "0":
        return None, "skipped: FASTDISTILL_CUDA=0"
    if arch:
        if arch.startswith("-"):
            return arch.split(), ""
        names = arch.replace(";", " ").replace(",", " ").split()
        archs = sorted({a.replace(".", "").replace("sm_", "") for a in names})
        return _gencode_flags(archs), ""
    visible = _visible_gpu_archs()
    if visible:
        return _gencode_flags(visible), ""
    if mode == "1":  # required, no GPU to size it for: the architectures of current data-centre GPUs
        return _gencode_flags(["80", "90"]), ""
    return None, f"skipped: no GPU visible at build time ({CUDA_HINT})"


class BuildExt(build_ext):
    """Builds the C++ module with the compiler setuptools picks and the CUDA module with nvcc; records outcomes."""

    def run(self):
        self.status = {}
        super().run()
        self._write_status()

    def copy_extensions_to_source(self):
        # `build_ext --inplace`: copy only what was built (a skipped CUDA module has no file to copy).
        everything = self.extensions
        self.extensions = [ext for ext in everything if self.status.get(ext.name) == "built"]
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = everything

    def build_extension(self, ext):
        if ext.name == "fastdistill._cuda":
            return self._build_cuda(ext)
        try:
            super().build_extension(ext)
            self.status[ext.name] = "built"
        except Exception as exc:  # a broken compiler must not break `pip install`
            if os.environ.get("FASTDISTILL_NATIVE") == "1":
                raise
            self.status[ext.name] = f"build failed: {exc}"
            print(f"WARNING: {ext.name} was not built ({exc}); the Numba/Python backends will serve", file=sys.stderr)

    def _build_cuda(self, ext):
        required = os.environ.get("FASTDISTILL_CUDA") == "1"
        arch, reason = _cuda_plan()
        if arch is None:
            self.status[ext.name] = reason
            return
        nvcc = _find_nvcc()
        if nvcc is None:
            if required:
                raise RuntimeError("FASTDISTILL_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
            self.status[ext.name] = f"skipped: nvcc not found ({CUDA_HINT})"
            return
        try:
            self._nvcc_link(ext, nvcc, arch)
            self.status[ext.name] = "built"
        except Exception as exc:
            if required:
                raise
            self.status[ext.name] = f"build failed: {exc}"
            print(f"WARNING: {ext.name} was not built ({exc})", file=sys.stderr)

    def _nvcc_link(self, ext, nvcc, arch):
        out = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = os.path.join(self.build_temp, "cuda")
        os.makedirs(tmp, exist_ok=True)
        includes = [_pybind_include(), sysconfig.get_paths()["include"], os.path.join(HERE, "csrc")]

        def compile_one(src):  # always recompiled: a handful of small files
            obj = os.path.join(tmp, os.path.basename(src) + ".o")
            cmd = [nvcc, "-c", src, "-o", obj, "-O3", "-std=c++17", "--compiler-options", "-fPIC,-fvisibility=hidden",
                   *arch, *[f"-I{i}" for i in includes]]
            print(" ".join(cmd))
            subprocess.check_call(cmd)
            return obj

        with ThreadPoolExecutor(_build_jobs()) as pool:
            objs = list(pool.map(compile_one, ext.sources))
        cmd = [nvcc, "-shared", "-o", out, *objs, "--cudart", "static", *arch, "--compiler-options", "-s"]
        print(" ".join(cmd))
        subprocess.check_call(cmd)

    def _write_status(self):
        path = os.path.join(self.build_lib, STATUS_FILE) if not self.inplace else os.path.join(HERE, STATUS_FILE)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(self.status, fh, indent=1)


# FASTDISTILL_SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer build of _C, for the native test subset
# (README, Development); unstripped, with frame pointers for readable reports; -O1 compiles 3x faster than -O3.
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"] \
    if os.environ.get("FASTDISTILL_SANITIZE") == "1" else []
_install_parallel_compile()
cpp_sources = sorted(glob.glob("csrc/cpu/*.cpp") + glob.glob("csrc/bind/*.cpp"))
if _target_is_x86():
    cpp_sources += sorted(glob.glob("csrc/cpu/x86/*.cpp"))
elif _target_is_arm64():
    cpp_sources += sorted(glob.glob("csrc/cpu/arm/*.cpp"))
cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
extensions = [
    Extension(
        "fastdistill._C",
        sources=cpp_sources,
        depends=sorted(glob.glob("csrc/**/*.h", recursive=True)),  # rebuild when any header changes
        include_dirs=[_pybind_include(), "csrc"],
        language="c++",
        # -g0 overrides the -g of Python's own CFLAGS: debug info made the module 52 MB
        extra_compile_args=["-std=c++17", "-O3", "-g0", "-fopenmp", "-fvisibility=hidden", "-fno-math-errno"] + SANITIZE,
        extra_link_args=["-fopenmp"] + (SANITIZE or ["-s"]),
    )
]
if cuda_sources:
    extensions.append(Extension("fastdistill._cuda", sources=cuda_sources))

setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt}, package_data={"fastdistill": ["_build_status.json"]})
