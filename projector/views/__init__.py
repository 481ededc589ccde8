"""The read models, one module each, registered in MODELS."""

from __future__ import annotations

from projector.views import customer_credit, customer_orders, order_summaries, product_sales, product_stock
from projector.views.base import ReadModel

MODELS: tuple[ReadModel, ...] = (
    order_summaries.MODEL, customer_orders.MODEL, product_sales.MODEL, customer_credit.MODEL, product_stock.MODEL,
)


def by_name(name: str) -> ReadModel:
    for model in MODELS:
        if model.name == name:
            return model
    raise SystemExit(f"no read model {name!r}; known: {', '.join(m.name for m in MODELS)}")
