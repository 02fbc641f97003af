"""The worker side of the ipc link: a request it cannot decode is answered, never dropped."""

from __future__ import annotations

import msgspec
import zmq

from zswarm.core import codec
from zswarm.core.messages import Error
from zswarm.runtime.worker_process import _Link


def test_an_undecodable_request_gets_an_error_for_its_request_id(tmp_path):
    endpoint = f"ipc://{tmp_path / 'w.sock'}"
    node = zmq.Context.instance().socket(zmq.ROUTER)
    node.setsockopt(zmq.LINGER, 0)
    node.bind(endpoint)
    link = _Link(endpoint, "w0")
    try:
        # 300 messages: over the wire limit, so the whole WorkGenerate fails to decode
        raw = {"type": "work_generate", "v": 1, "request_id": "r-42",
               "request": {"messages": [{"role": "user", "content": "x"}] * 300}}
        link.send(Error(request_id=None, kind="hello", message="so the node knows us"))
        ident, _ = node.recv_multipart()
        node.send_multipart([ident, msgspec.msgpack.encode(raw)])
        assert link.recv(5000) is None  # dropped by the worker loop...
        assert node.poll(5000)
        (_, reply) = node.recv_multipart()
        err = codec.decode(reply)  # ...but answered
        assert isinstance(err, Error) and err.request_id == "r-42" and err.kind == "protocol"
        node.send_multipart([ident, b"\xc1 no id at all"])
        assert link.recv(5000) is None and not node.poll(200)
    finally:
        link.sock.close(linger=0)
        node.close()
