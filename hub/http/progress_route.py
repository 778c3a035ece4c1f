"""POST /progress/{job}: a job's progress published as a retained event on `jobs/{job}`, so a late
subscriber sees where the job stands at once. The update's shape is `hub/wire/progress.py`'s."""

from __future__ import annotations

from aiohttp import web

from hub.http.body import read_body
from hub.http.state import CONFIG, FANOUT, GUARD
from hub.wire.event import Draft
from hub.wire.progress import job_topic, parse_progress


async def progress(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    guard = request.app[GUARD]
    job = request.match_info["job"]
    topic = job_topic(job)
    publisher = guard.publisher(request)
    guard.check_publish(publisher, [Draft((topic,), None)])
    body = await read_body(request, config.server.body_timeout)
    draft = parse_progress(job, body, config.limits.max_data_bytes)
    ids = await request.app[FANOUT].publish([draft])
    return web.json_response({"id": ids[0], "topic": topic})
