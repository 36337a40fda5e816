"""A text classifier served by KServe's own model server: a v2 server that is not a Carpool.

`carpool bench --protocol v2` must drive any Open Inference Protocol server; this is one, built
from the kserve SDK's REST front end (its FastAPI app, data plane and exception handlers) over a
tiny BERT run by transformers. Its input is named `input_text` with shape `[-1]` (not Carpool's
`text`, `[-1, 1]`), so a client has to read the metadata to drive it. It listens on loopback only
(kserve's ModelServer would bind every interface)::

    python -m tests.support.kserve_model MODEL_NAME MODEL_DIR PORT
"""

from __future__ import annotations

import sys
from typing import Any


def main(name: str, path: str, port: int) -> None:
    import kserve
    import numpy as np
    import torch
    import uvicorn
    from kserve.model_server import app
    from kserve.protocol.rest.server import RESTServer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    class TextClassifier(kserve.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
            self.ready = True

        def get_input_types(self) -> list[dict[str, Any]]:
            return [{"name": "input_text", "datatype": "BYTES", "shape": [-1]}]

        def get_output_types(self) -> list[dict[str, Any]]:
            return [{"name": "label", "datatype": "BYTES", "shape": [-1]}]

        def predict(self, payload: Any, headers: Any = None, **_: Any) -> Any:
            texts = [
                t.decode() if isinstance(t, bytes) else str(t) for t in payload.inputs[0].as_numpy().ravel()
            ]
            encoded = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            with torch.inference_mode():
                classes = self.model(**encoded).logits.argmax(-1).tolist()
            labels = np.array([self.model.config.id2label[c] for c in classes], dtype=np.object_)
            output = kserve.InferOutput("label", [len(texts)], "BYTES")
            output.set_data_from_numpy(labels, binary_data=False)
            return kserve.InferResponse(response_id=payload.id or "", model_name=name, infer_outputs=[output])

    server = kserve.ModelServer(enable_grpc=False, workers=1)
    server.register_model(TextClassifier())
    RESTServer(
        "kserve.model_server:app", server.dataplane, server.model_repository_extension, port
    ).create_application()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
