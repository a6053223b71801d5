# Single-threaded event loop on uvloop (libuv): python-asyncio's protocol, unchanged, on uvloop.
# The protocol and argument handling are loaded from ../python-asyncio/server.py, not copied.
import importlib.util
import os
import sys

_SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))),
                       'python-asyncio', 'server.py')


def _load_shared():
    sys.dont_write_bytecode = True  # leave no __pycache__ behind in python-asyncio/
    spec = importlib.util.spec_from_file_location('volley_python_asyncio', _SHARED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == '__main__':
    shared = _load_shared()
    import uvloop
    shared.main(prog='python-uvloop', run=uvloop.run)
