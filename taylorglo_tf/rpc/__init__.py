"""Generated protobuf/gRPC stubs of the TaylorGLO-TF API (``protos/taylorglo/v1``).

Import the modules directly::

    from taylorglo_tf.rpc import types_pb2, worker_service_pb2, worker_service_pb2_grpc

The ``*_pb2*.py(i)`` files are generated and committed; never edit them. After
changing ``protos/``, run ``python -m taylorglo_tf.rpc.generate`` (a test fails
while the committed stubs are stale).
"""
