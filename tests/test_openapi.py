"""The OpenAPI description: it ships in the package, is served, and describes the routes there are."""

from __future__ import annotations

import json
from importlib import metadata, resources

import jsonschema_rs
import schemathesis

from hub import __version__
from hub.config import Config
from hub.http.app import create_app


def packaged() -> dict:
    return json.loads(resources.files("hub").joinpath("openapi.json").read_text("utf-8"))


async def test_description_is_served_as_packaged(hub):
    async with hub.session.get(hub.url + "/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        served = await resp.json()
    assert served["info"].pop("version") == __version__ == metadata.version("broadcast-hub")
    assert served["info"] == {k: v for k, v in packaged()["info"].items() if k != "version"}
    assert {k: v for k, v in served.items() if k != "info"} == {
        k: v for k, v in packaged().items() if k != "info"
    }


async def test_description_names_every_route_and_no_other():
    app = create_app(Config())
    routes = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    described = {(path, method) for path, item in packaged()["paths"].items() for method in item}
    assert described == routes


def test_description_is_valid_openapi_and_every_operation_builds():
    schema = schemathesis.openapi.from_dict(packaged())
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    for name, component in packaged()["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(component), name
    operations = list(schema.get_all_operations())
    assert len(operations) == len(packaged()["paths"])
    for result in operations:
        result.ok()  # raises with the reason when an operation's definition is invalid
