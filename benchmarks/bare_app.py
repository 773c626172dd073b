"""The baseline for bench_http.py: the same model behind a bare FastAPI endpoint, no governance."""

from __future__ import annotations

import os
from typing import Any

import joblib
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

FEATURES = ["amount", "income", "credit_score"]
model = joblib.load(os.environ["BARE_MODEL_PATH"])
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> Response:
    import orjson

    body: dict[str, Any] = orjson.loads(await request.body())
    row = np.array([[float(body["input"][f]) for f in FEATURES]])
    proba = model.predict_proba(row)[0]
    best = int(proba.argmax())
    result = {"outcome": str(model.classes_[best]), "confidence": float(proba[best])}
    return Response(orjson.dumps(result), media_type="application/json")
