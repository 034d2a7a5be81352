"""REST routes: thin functions over the ``Service`` (request model in, response model out)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response

from ._dashboard import agent_health, parse_since, run_page
from ._schemas import (
    ERRORS,
    LEARNER_ID,
    AgentHealth,
    AgentList,
    AgentRequest,
    AgentResponseBody,
    CohortAnalytics,
    ErrorBody,
    Health,
    LearnerAnalytics,
    LearnerState,
    PlanValid,
    RunAccepted,
    RunList,
    RunRecord,
    RunStatus,
)
from ._service import AGENT_MS, Service, now_ms

PLAN_BODY = Body(
    description="a plan (SPEC §2, camelCase as in the seed), or {plan, runId}",
    examples=[
        {
            "id": "p",
            "steps": [
                {
                    "id": "a",
                    "agentId": "learning-agent-1",
                    "action": "fetch_external_data",
                    "input": {"source": "curriculum_api"},
                }
            ],
        }
    ],
)


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


def _service(request: Request) -> Service:
    return request.app.state.service


def _timed(response: Response, acc: list[float]) -> None:
    response.headers["Server-Timing"] = f"agent;dur={acc[0]:.3f}"


def build_router(auth: Any) -> APIRouter:
    """The routes; ``auth`` is the dependency guarding /api and /metrics."""
    api = APIRouter(
        prefix="/api",
        dependencies=[Depends(auth)],
        responses={k: ERRORS[k] for k in (400, 401, 413, 422)},
    )

    @api.post(
        "/agents",
        response_model=AgentResponseBody,
        tags=["agents"],
        responses={
            409: _err("the learner has no active session (start_session first)"),
            503: _err("the agent failed for a passing reason; retry"),
        },
    )
    async def agents_action(req: AgentRequest, request: Request, response: Response) -> Any:
        """Session actions (start_session, process_interaction, end_session) and, with
        `agent`, any action of the learner's learning, tutor or speech agent.
        The `Server-Timing: agent;dur=MS` header gives the agents' own time."""
        svc = _service(request)
        acc = [0.0]
        token = AGENT_MS.set(acc)
        try:
            out = await svc.handle(req.action, req.learnerId, req.agent, req.data)
        finally:
            AGENT_MS.reset(token)
        _timed(response, acc)
        return out

    @api.get("/agents", response_model=AgentList, tags=["agents"])
    async def list_agents(request: Request) -> Any:
        """Every registered agent: id, kind, capacity, attempts in flight and waiting."""
        svc = _service(request)
        return {"agents": svc.agents()}

    @api.get("/deployment", tags=["ops"], responses={404: {"description": "no deployment"}})
    async def get_deployment(request: Request) -> Any:
        """The deployment bundle in force (SPEC §14): plans by role, capacities, policies,
        models and its provenance in ``meta``; 404 when the server runs without one."""
        bundle = _service(request).deployment
        if bundle is None:
            raise HTTPException(
                404, "this server runs no deployment (orchkit serve --deployment FILE)"
            )
        return bundle.to_dict()

    @api.get("/agents/health", response_model=list[AgentHealth], tags=["agents"])
    async def agents_health(request: Request) -> Any:
        """Each agent's kind, capacity, in flight, breaker, p95 and error rate of the
        attempts that ended in the last 5 minutes, and the workers serving it."""
        return await agent_health(_service(request))

    @api.get("/learners/{learnerId}", response_model=LearnerState, tags=["agents"])
    async def learner(
        request: Request,
        learnerId: str = Path(pattern=LEARNER_ID),
        limit: int = Query(100, ge=1, le=1000),
    ) -> Any:
        """The learner's latest session record and newest insights (from the store)."""
        svc = _service(request)
        return {
            "learnerId": learnerId,
            "session": await svc.store.get_session(learnerId),
            "insights": await svc.insights(learnerId, limit),
        }

    @api.get("/analytics/learners/{learnerId}", response_model=LearnerAnalytics, tags=["analytics"])
    async def learner_analytics(request: Request, learnerId: str = Path(pattern=LEARNER_ID)) -> Any:
        """The learner's mastery per skill (Bayesian knowledge tracing over the responses
        the store recorded) and its trajectory; no responses: an empty `skills`."""
        return await _service(request).analytics.learner(learnerId)

    @api.get("/analytics/cohort", response_model=CohortAnalytics, tags=["analytics"])
    async def cohort_analytics(
        request: Request,
        since: str | None = Query(
            None, max_length=64, description="ms since the epoch, or ISO-8601 (e.g. …Z)"
        ),
    ) -> Any:
        """Mastery rate, median opportunities to mastery, wheel-spin rate, learning gain by
        tutor outcome and the tutor's p95 latency, over the learners active since `since`."""
        return await _service(request).analytics.cohort(parse_since(since))

    @api.post(
        "/runs",
        status_code=202,
        response_model=RunAccepted,
        tags=["runs"],
        responses={409: _err("runId already used")},
    )
    async def submit_run(request: Request, body: dict[str, Any] = PLAN_BODY) -> Any:
        """Start a run of the plan; 202 with its id once it is recorded as `running`."""
        svc = _service(request)
        return {"runId": await svc.submit_run(body)}

    @api.get("/runs", response_model=RunList, tags=["runs"])
    async def list_runs(
        request: Request,
        status: RunStatus | None = None,
        planId: str | None = Query(None, max_length=256),
        learnerId: str | None = Query(None, max_length=256),
        since: str | None = Query(
            None, max_length=64, description="ms since the epoch, or ISO-8601 (e.g. …Z)"
        ),
        limit: int = Query(50, ge=1, le=1000),
        cursor: str | None = Query(None, max_length=1024, description="a page's nextCursor"),
    ) -> Any:
        """The newest runs (by creation), filtered; one page of `limit`, then `nextCursor`
        (null on the last page) for the next, older one."""
        svc = _service(request)
        return await run_page(
            svc,
            status=status,
            plan_id=planId,
            learner_id=learnerId,
            since=since,
            limit=limit,
            cursor=cursor,
        )

    @api.get(
        "/runs/{runId}",
        response_model=RunRecord,
        tags=["runs"],
        responses={404: _err("no such run")},
    )
    async def get_run(runId: str, request: Request) -> Any:
        """The run's record: plan, status, result, spans and events."""
        svc = _service(request)
        return await svc.get_run(runId)

    @api.delete(
        "/runs/{runId}",
        response_model=RunRecord,
        tags=["runs"],
        responses={404: _err("no such run"), 409: _err("the run has already ended")},
    )
    async def cancel_run(runId: str, request: Request) -> Any:
        """Cancel a running run; answers its final record (status `cancelled`)."""
        svc = _service(request)
        return await svc.cancel_run(runId)

    @api.post("/plans/validate", response_model=PlanValid, tags=["runs"])
    async def validate(body: dict[str, Any] = PLAN_BODY) -> Any:
        """200 if the plan is valid, 422 with the validation message otherwise."""
        plan = Service.validate_plan(body)
        chain = plan.chain()
        return {
            "valid": True,
            "planId": plan.id,
            "plans": len(chain),
            "steps": sum(len(p.steps) for p in chain),
        }

    root = APIRouter()
    root.include_router(api)

    @root.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz(request: Request) -> Any:
        """Liveness: the server answers (no key needed). `status` is "degraded" while
        records the store refused (it is down) wait to be written."""
        svc = _service(request)
        return {
            **svc.health(),
            "store": type(svc.store).__name__,
            "uptimeMs": now_ms() - svc.started_ms,
            "runsInFlight": svc.runs_in_flight(),
            "sessionsActive": svc.sessions_active(),
        }

    @root.get(
        "/metrics",
        tags=["ops"],
        dependencies=[Depends(auth)],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, 401: ERRORS[401], 413: ERRORS[413]},
    )
    async def metrics(request: Request) -> Response:
        """Prometheus text: runs by status, step latency histograms by agent, in flight,
        queue depth."""
        svc = _service(request)
        await svc.analytics.refresh_gauge()  # orchkit_mastery_rate{skill}, from the store
        body, ctype = svc.metrics.render()
        return Response(body, media_type=ctype)

    return root
