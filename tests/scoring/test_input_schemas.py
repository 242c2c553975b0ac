"""inference-schema decorators (the real package): Azure ML's conversion, 4xx on bad input, swagger."""

from __future__ import annotations

import pytest
from conftest import SCRIPTS, Server


@pytest.fixture(scope="module")
def numpy_server(serve) -> Server:
    return serve("--entry-script", str(SCRIPTS / "numpy_schema.py"))


@pytest.fixture(scope="module")
def pandas_server(serve) -> Server:
    return serve("--entry-script", str(SCRIPTS / "pandas_schema.py"))


@pytest.fixture(scope="module")
def standard_server(serve) -> Server:
    return serve("--entry-script", str(SCRIPTS / "standard_schema.py"))


def test_numpy_input_is_converted_to_an_array_of_the_sample_dtype(numpy_server: Server) -> None:
    r = numpy_server.client.post("/score", json={"data": [[1, 2, 3], [4, 5, 6]]})
    assert r.status_code == 200, r.text
    assert r.json() == {"sum": [6.0, 15.0], "dtype": "float32"}


def test_numpy_shape_mismatch_is_a_400_naming_the_problem(numpy_server: Server) -> None:
    r = numpy_server.client.post("/score", json={"data": [[1, 2]]})
    assert r.status_code == 400
    assert "schema" in r.json()["message"] and "dimension" in r.json()["message"]


def test_exception_inside_a_decorated_run_is_still_a_500(numpy_server: Server) -> None:
    r = numpy_server.client.post("/score", json={"data": [[4, 4, 5]]})
    assert r.status_code == 500
    assert "unlucky sum" not in r.json()["message"]
    assert r.headers["x-ms-run-function-failed"] == "True"


def test_invalid_json_missing_parameter_and_wrong_content_type(numpy_server: Server) -> None:
    r = numpy_server.client.post("/score", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
    r = numpy_server.client.post("/score", json={"other": 1})
    assert r.status_code == 400 and "'data'" in r.json()["message"]
    r = numpy_server.client.post("/score", json=[1, 2])
    assert r.status_code == 400 and "JSON object" in r.json()["message"]
    r = numpy_server.client.post("/score", content=b'{"data": [[1,2,3]]}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


def test_pandas_records_become_a_dataframe(pandas_server: Server) -> None:
    rows = [{"a": 1, "b": 0.5, "name": "p"}, {"a": 2, "b": 1.5, "name": "q"}]
    r = pandas_server.client.post("/score", json={"data": rows})
    assert r.status_code == 200, r.text
    assert r.json() == {"rows": 2, "total": 5.0, "names": ["p", "q"]}


def test_nested_standard_python_schema_converts_the_inner_numpy_array(standard_server: Server) -> None:
    body = {"Inputs": {"arr": [[1, 2], [3, 4]], "scale": 0.5}, "GlobalParameters": 2.0}
    r = standard_server.client.post("/score", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"total": 10.0, "arr_type": "ndarray", "shape": [2, 2]}
    # GlobalParameters has a default, so it may be left out
    r = standard_server.client.post("/score", json={"Inputs": {"arr": [[1, 1]], "scale": 1.0}})
    assert r.json()["total"] == 2.0


def test_swagger_2_and_3_are_generated_from_the_decorators(numpy_server: Server) -> None:
    r = numpy_server.client.get("/swagger.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["swagger"] == "2.0"
    data = doc["definitions"]["ServiceInput"]["properties"]["data"]
    assert data["type"] == "array" and data["items"]["type"] == "array"
    assert data["items"]["items"]["format"] == "float"
    assert doc["definitions"]["ServiceOutput"]["type"] == "array"
    v3 = numpy_server.client.get("/swagger.json", params={"version": "3"}).json()
    assert v3["openapi"].startswith("3.0")
    assert "data" in v3["components"]["schemas"]["ServiceInput"]["properties"]
    assert numpy_server.client.get("/swagger.json", params={"version": "9"}).status_code == 404


def test_v2_infer_calls_a_schema_decorated_run(numpy_server: Server) -> None:
    meta = numpy_server.client.get("/v2/models/numpy_schema").json()
    assert meta["inputs"] == [{"name": "data", "datatype": "FP32", "shape": [-1, 3]}]
    request = {"inputs": [{"name": "data", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]}
    r = numpy_server.client.post("/v2/models/numpy_schema/infer", json=request)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["sum"]["data"] == [3.0]
    assert outputs["sum"]["datatype"] == "FP32"
