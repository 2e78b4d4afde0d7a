"""Everything that speaks gRPC: the generated stubs (`v1/`, from protos/), the tensor and job
message conversions (`wire`), and the Python clients of the services (`client`).

Needs the `rpc` extra (grpcio, protobuf); the core library never imports this package.
"""

from lm_saes.extras import require

require("grpc", "rpc", "lm_saes.rpc (the services' gRPC clients)")
