"""The harness shared by the tests and the benchmarks (``bench/``).

    postgres    an embedded PostgreSQL in a temp dir (stop / start for outages), databases on it
    simulator   the CoreClaw simulator: in process, in a thread of its own, or as
                `syncd fake-api`; predicates on its request log
    settings    Settings for a simulator and a database, and the environment of a `syncd` command
    processes   `syncd` commands in subprocesses: run one, measure one, keep one running
    cycles      one cycle of both streams, in process, as the daemon runs them
    truth       the database against the simulator's truth
    tables      text tables for reports

Import it as ``tests.support.<module>``: from the repository root (``python -m
pytest``, ``python -m bench.backfill``) ``tests`` is an importable package.
"""
