"""loopkeeper against its peers: side by side, in one run, with ratios paired per round.

Peers: see ``peers``; rcts (``asyncio.run_coroutine_threadsafe``) is the reference.

Method.  Peers are interleaved round by round, the order rotated each round (A B C,
B C A, ...).  Every figure is the median over rounds, shown with its spread (min-max);
every ratio is peer / rcts taken within one round (both measured seconds apart), then the
median over rounds.  Costs (ns, us, MB, ms): below 1 is better than rcts.  Throughput:
above 1 is better.  The harness's own objects are frozen out of the cyclic GC after the
warm-up, and every measurement starts from a collected heap; the GC stays on, as in a
deployment.  A fixed pure-Python loop is timed once per round: its spread shows how
noisy the machine was.

Metrics (wall clock, ``time.perf_counter_ns``; tasks are trivial unless said):

submit      ns per submit() from one thread while the loop runs the tasks; under the GIL
            the caller's time includes the loop's work, so this tracks 1/throughput.
throughput  tasks/s with 1, 8 and 64 submitting threads, from their release to the
            completion of the last task.
latency     submit to the task's first line, p50/p99 in us: at a low rate (one task, then
            time.sleep(100e-6)) and in bursts of 100 back-to-back submits (each burst
            completes, then 1 ms idle).
mixed       the low-rate latency again, each peer interleaved task by task with rcts:
            task i of the two in a random order, each followed by the 100 us sleep.  Both
            meet the same machine in the same moments, so the paired ratio moves by about
            0.01-0.02 between rounds where the block-wise one moves by 0.3.  One pair at a
            time: in a wider mix, peers that share code (rcts, the limit, anyio) would
            keep it warm for each other.  loopkeeper+watchdog sits out.  rcts's figures
            pool its runs with every peer.
memory      RSS growth per 100k pending tasks (parked on an event never set), in a fresh
            child process per peer.
drain       N accepted tasks are parked at a gate; the gate opens (each then sleeps
            10 ms) and the peer's graceful drain is called at once: its duration, and the
            tasks not finished when it returned ("lost").  rcts and limit have no drain
            of their own: the harness waits on asyncio.all_tasks(), as a user would.
scaling     loopkeeper, rcts and limit only, for N = 1k, 10k, 100k and 1M pending (--quick:
            up to 100k).  RSS per pending task: one fresh child process per N (one round:
            RSS barely moves between rounds).  Submit cost with N tasks pending (as
            "submit", median of 3 probes): one child per round, filled level by level and
            probed at each level, so the levels are compared within one process.
drainscale  drain time against pending (2k, 10k, 50k) for the same three peers, and the
            marginal cost per task between sizes (linear: the same on every segment).

Slow peers run fewer tasks (anyio and thread-per-task: 0.1x; thread-per-task memory: 1,000
threads), and every figure is per task or per second; the low-rate latency and the drain
are never scaled.

    ./scripts/bench --quick                       # ~2.5-3.5 minutes; makes .venvs/bench first
    ./scripts/bench                               # full mode (1M pending), ~20 minutes
    ./scripts/bench --quick --uvloop
    ./scripts/bench --quick --peers loopkeeper,rcts,limit --metrics submit,latency
    ./scripts/bench --quick --json out.json --markdown
    ./scripts/bench --report out.json --markdown  # print the tables of a saved run
    ./scripts/bench --goals a.json b.json         # the goal lines of several runs side by side
    ./scripts/bench --django --quick              # enqueue() of a Django task (django_enqueue)

Not a test: nothing here asserts a duration.  The "Goals of issue 8" table at the end
only reads the ratios against the goal lines.

Modules, each depending only on those above it:

    peers           the peers, and rcts as the reference
    workloads       the tasks they run; countdowns and gates
    metrics         measurements in this process: submit, throughput, latency, drain
    child           measurements in a fresh interpreter: RSS and submit cost with N pending
    machine         what a run records about the machine, and the calibration loop
    summary         samples per round; medians, spreads and per-round paired ratios
    report          the tables and the goal lines of issue 8
    run             the rounds: peers interleaved, order rotated, samples recorded
    django_enqueue  --django: enqueue() of a Django task (loopkeeper's backend, a bare
                    submit(), django-tasks-db), its rounds and tables; welcome_tasks
                    holds its tasks
    cli             the options and the printout
"""
