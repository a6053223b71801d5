# The Cython hot loop is the only compiled part; everything else is plain Python.
from Cython.Build import cythonize
from setuptools import Extension, setup

core = Extension(
    "volley._core",
    sources=["volley/_core.pyx"],
    extra_compile_args=["-O3", "-fno-strict-aliasing"],
)

setup(
    ext_modules=cythonize(
        [core],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "initializedcheck": False,
            "cdivision": True,
        },
    ),
)
