"""LinkedIn branch: Images API or Videos API uploads, then a Posts API create (article,
image, multiImage or video).

Credential: the generic OAuth2 credential "LinkedIn (Herald)" (n8n/README.md says how to
set it up); LINKEDIN_API_BASE_URL points the branch elsewhere (tests: a fake).
"""

from __future__ import annotations

from typing import Any

from nodes import code, if_true, request

CREDENTIAL = ("oAuth2Api", {"id": "HeraldLinkedInOA", "name": "LinkedIn (Herald)"})
HEADERS = {
    "parameters": [
        {"name": "LinkedIn-Version", "value": "={{ $json.version }}"},
        {"name": "X-Restli-Protocol-Version", "value": "2.0.0"},
    ]
}


def branch(x: int, y: int) -> tuple[list[dict[str, Any]], list[tuple[str, int, str]], str, str]:
    nodes = [
        code("LinkedIn: prepare", "linkedin-prepare", x, y),
        if_true("LinkedIn: upload media?", "={{ $json.upload }}", x + 220, y),
        request(
            "LinkedIn: initialize upload",
            "POST",
            "={{ $json.base }}{{ $json.initPath }}",
            x + 440,
            y - 100,
            CREDENTIAL,
            sendHeaders=True,
            headerParameters=HEADERS,
            sendBody=True,
            specifyBody="json",
            jsonBody="={{ JSON.stringify($json.initBody) }}",
        ),
        code("LinkedIn: attach", "linkedin-attach", x + 660, y - 100),
        request(
            "LinkedIn: upload",
            "PUT",
            "={{ $json.uploadUrl }}",
            x + 880,
            y - 100,
            CREDENTIAL,
            sendBody=True,
            contentType="binaryData",
            inputDataFieldName="data",
        ),
        code("LinkedIn: collect", "linkedin-collect", x + 1100, y - 100),
        if_true("LinkedIn: finalize?", "={{ $json.finalize }}", x + 1320, y - 100),
        request(
            "LinkedIn: finalize video",
            "POST",
            "={{ $json.base }}/rest/videos?action=finalizeUpload",
            x + 1540,
            y - 200,
            CREDENTIAL,
            sendHeaders=True,
            headerParameters=HEADERS,
            sendBody=True,
            specifyBody="json",
            jsonBody="={{ JSON.stringify($json.body) }}",
        ),
        code("LinkedIn: build post", "linkedin-build", x + 1760, y),
        if_true("LinkedIn: ready?", "={{ $json.ready }}", x + 1980, y),
        request(
            "LinkedIn: create post",
            "POST",
            "={{ $json.base }}/rest/posts",
            x + 2200,
            y - 100,
            CREDENTIAL,
            sendHeaders=True,
            headerParameters=HEADERS,
            sendBody=True,
            specifyBody="json",
            jsonBody="={{ JSON.stringify($json.body) }}",
        ),
        code("LinkedIn: result", "linkedin-result", x + 2420, y),
    ]
    edges = [
        ("LinkedIn: prepare", 0, "LinkedIn: upload media?"),
        ("LinkedIn: upload media?", 0, "LinkedIn: initialize upload"),
        ("LinkedIn: upload media?", 1, "LinkedIn: build post"),
        ("LinkedIn: initialize upload", 0, "LinkedIn: attach"),
        ("LinkedIn: attach", 0, "LinkedIn: upload"),
        ("LinkedIn: upload", 0, "LinkedIn: collect"),
        ("LinkedIn: collect", 0, "LinkedIn: finalize?"),
        ("LinkedIn: finalize?", 0, "LinkedIn: finalize video"),
        ("LinkedIn: finalize?", 1, "LinkedIn: build post"),
        ("LinkedIn: finalize video", 0, "LinkedIn: build post"),
        ("LinkedIn: build post", 0, "LinkedIn: ready?"),
        ("LinkedIn: ready?", 0, "LinkedIn: create post"),
        ("LinkedIn: ready?", 1, "LinkedIn: result"),
        ("LinkedIn: create post", 0, "LinkedIn: result"),
    ]
    return nodes, edges, "LinkedIn: prepare", "LinkedIn: result"
