"""streamsonic.reloading: SIGHUP's reloads run one at a time, one more after a busy one."""

from __future__ import annotations

import asyncio

from streamsonic.reloading import Reloader


def test_requests_during_a_reload_make_one_more_after_it_and_a_stop_gives_it_up() -> None:
    async def main() -> None:
        runs: list[int] = []
        gate = asyncio.Event()

        async def reload() -> None:
            runs.append(len(runs))
            await gate.wait()

        reloader = Reloader(reload)
        reloader.request()
        await asyncio.sleep(0)
        assert runs == [0]  # the first pass runs (waiting, as on a broker's login)
        reloader.request()
        reloader.request()  # (several SIGHUPs meanwhile: one more pass, not two)
        await asyncio.sleep(0)
        assert runs == [0]  # not beside it
        gate.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert runs == [0, 1]
        gate.clear()
        reloader.request()  # a new reload, left waiting ...
        await asyncio.sleep(0)
        assert runs == [0, 1, 2]
        await reloader.cancel()  # ... is given up at a stop
        gate.set()
        await asyncio.sleep(0)
        assert runs == [0, 1, 2]
        await reloader.cancel()  # (idempotent)

    asyncio.run(main())
