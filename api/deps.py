"""Dependencies shared by the routers (Annotated, resolved per request)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.service import CoverageService


def _coverage_service(request: Request) -> CoverageService:
    svc: CoverageService = request.app.state.coverage
    return svc


CoverageDep = Annotated[CoverageService, Depends(_coverage_service)]
