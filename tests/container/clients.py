"""Plain gRPC clients that keep predicting `mlp` on every replica by version label while a container test
changes labels or traffic under them: the versions that answered, per replica and label, and every failure."""

from __future__ import annotations

import grpc
import numpy as np

from tests.server_util import Background


class LabelClients(Background):
    """One thread per (replica, label), each predicting with its own stub; `versions[(target, label)]` lists
    the version of every answer in order, `failures` every RPC error."""

    join_s = 15.0

    def __init__(self, targets: list[str], labels: tuple[str, ...], pause_s: float = 0.01):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        from tests.test_grpc_integration import predict_request

        super().__init__()
        self.pause_s = pause_s
        self.channels = {t: grpc.insecure_channel(t) for t in targets}
        self.stubs = {t: prediction_service_pb2_grpc.PredictionServiceStub(c) for t, c in self.channels.items()}
        self.reqs = {label: predict_request("mlp", {"x": np.ones((1, 10), np.float32)}, label=label)
                     for label in labels}
        self.versions: dict[tuple[str, str], list[int]] = {(t, lb): [] for t in targets for lb in labels}
        self.failures: list[str] = []
        for key in self.versions:
            self.spawn(self._run, *key)

    def _run(self, target: str, label: str) -> None:
        while not self.stopping(self.pause_s):
            try:
                resp = self.stubs[target].Predict(self.reqs[label], timeout=10)
                self.versions[(target, label)].append(resp.model_spec.version.value)
            except grpc.RpcError as e:
                self.failures.append(f"{target} {label}: {e.code().name}: {e.details()}")

    def closed(self) -> None:
        for c in self.channels.values():
            c.close()
