"""@rawhttp run(): sees the whole request and answers with AMLResponse."""

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    assert isinstance(request, AMLRequest)
    if request.method == "GET":
        return AMLResponse(f"GET {request.path} q={request.args.get('q')}", 200)
    body = request.get_data(False)
    if body == b"fail":
        return AMLResponse({"error": "asked to fail"}, 503, json_str=True)
    if request.is_json:
        return {"echo": request.json, "content_type": request.headers["Content-Type"]}
    return AMLResponse(body[::-1], 201, {"Content-Type": "application/octet-stream", "X-Items": "a, b"})
