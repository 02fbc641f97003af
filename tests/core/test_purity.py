import subprocess
import sys


def test_core_imports_no_io_libraries():
    code = (
        "import sys, zswarm.core.consensus, zswarm.core.codec, zswarm.core.answers, "
        "zswarm.core.ids, zswarm.core.messages, zswarm.core.peers, zswarm.core.plan, "
        "zswarm.core.claims, zswarm.core.limits\n"
        "bad = [m for m in ('trio', 'zmq', 'zeroconf', 'llama_cpp', 'ctransformers', 'httpx',"
        " 'hypercorn', 'starlette') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
