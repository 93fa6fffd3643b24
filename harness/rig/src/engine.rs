//! The scenario engine: boards in parallel (one task per board, bounded), scenarios on a board in
//! sequence, every step with a deadline, Ctrl-C / SIGTERM cancellation that still leaves a valid
//! report, and the lock of a lab board's hardware held for the whole run.
//!
//! Steps are blocking work (probe-rs, serial, USB): each runs on the blocking pool. A step's
//! deadline is on the board's clock ([`BoardSession::clock`]): wall time for a lab board, the
//! board's own clock for a virtual board, which runs only while the rig waits on it; so a verdict
//! never depends on how busy the host is. Backends honour that deadline themselves
//! ([`StepCx::deadline`]); the async side only keeps a wall-clock safety net (the deadline plus a
//! grace for a lab board, [`virtual_safety_net`] of it for a virtual one),
//! and tripping it is an infrastructure error, never a board failure.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hil_bootloader_host::clock::{Clock, ClockKind, Deadline, WallClock};
use hil_config::scenario::{Action, Outcome};
use hil_config::{Board, Config, Step};
use hil_report::{
    Attempt, BoardInfo, Diagnosis, Evidence, ExpectedResult, RunDir, RunReport, RunStatus, ScenarioResult, Status,
    StepResult, Tool,
};
use tokio::sync::{Semaphore, mpsc};

use crate::lock::BoardLock;
use crate::plan::{BoardPlan, PlannedScenario};

/// Shared "stop now" flag (Ctrl-C, SIGTERM).
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a step sees of the run.
#[derive(Clone, Debug)]
pub struct StepCx {
    /// The step must be over by then, on the board's clock.
    pub deadline: Deadline,
    pub cancel: CancelFlag,
    /// The scenario file (relative paths in steps are relative to it).
    pub scenario_file: PathBuf,
    pub index: usize,
}

impl StepCx {
    /// A context whose deadline is `budget` from now on `clock`.
    pub fn new(
        clock: &Arc<dyn Clock>,
        budget: Duration,
        cancel: CancelFlag,
        scenario_file: PathBuf,
        index: usize,
    ) -> Self {
        StepCx { deadline: Deadline::after(clock, budget), cancel, scenario_file, index }
    }
    /// Time left on the board's clock.
    pub fn remaining(&self) -> Duration {
        self.deadline.remaining()
    }
    /// Whether the step must stop now: its deadline passed or the run was cancelled.
    pub fn expired(&self) -> bool {
        self.deadline.passed() || self.cancel.is_cancelled()
    }
    /// The board's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        self.deadline.clock()
    }
    /// Let `d` pass on the board's clock (at most what is left of the step).
    pub fn sleep(&self, d: Duration) {
        self.clock().sleep(d.min(self.remaining()))
    }
}

/// The host's wall clock, for sessions without a board clock of their own.
pub fn shared_wall_clock() -> Arc<dyn Clock> {
    static WALL: std::sync::OnceLock<Arc<dyn Clock>> = std::sync::OnceLock::new();
    WALL.get_or_init(WallClock::shared).clone()
}

/// What a step produced.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutcome {
    /// Passed, Failed (the board did not do what was expected) or Error (the rig could not do it).
    pub status: Status,
    pub message: Option<String>,
    pub evidence: Vec<Evidence>,
}

impl StepOutcome {
    pub fn passed() -> Self {
        StepOutcome { status: Status::Passed, message: None, evidence: vec![] }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        StepOutcome { status: Status::Failed, message: Some(message.into()), evidence: vec![] }
    }
    pub fn error(message: impl Into<String>) -> Self {
        StepOutcome { status: Status::Error, message: Some(message.into()), evidence: vec![] }
    }
    pub fn with_evidence(mut self, e: Evidence) -> Self {
        self.evidence.push(e);
        self
    }
}

/// One board opened for a run: how steps are carried out.
pub trait BoardSession: Send {
    /// Prepare for a scenario (e.g. forget the serial output of the previous one).
    fn begin_scenario(&mut self, scenario: &hil_config::Scenario) -> Result<(), crate::step_error::StepError>;
    /// Carry out one step. Blocking; must return by `cx.deadline` and check `cx.cancel` in long waits.
    fn run_step(&mut self, step: &Step, cx: &StepCx) -> StepOutcome;
    /// The board's clock: every step deadline counts on it (wall time unless the board has its
    /// own, as a virtual board does).
    fn clock(&self) -> Arc<dyn Clock> {
        shared_wall_clock()
    }
    /// After a failure: snapshot the board and name the likely cause.
    fn diagnose(&mut self, failed_step: &Step, outcome: &StepOutcome) -> Option<Diagnosis>;
    /// Evidence collected across the scenario (serial transcript ...), attached to the last step run.
    fn take_scenario_evidence(&mut self) -> Vec<Evidence> {
        Vec::new()
    }
    /// What the session saw of the board so far (probe, bootloader, images), for the report.
    fn seen(&self) -> hil_report::Seen {
        hil_report::Seen::default()
    }
    /// Release everything (the board is left powered as it is).
    fn close(&mut self) {}
}

/// Opens boards for a run (virtual boards are started, lab boards connected).
pub trait BoardOpener: Send + Sync {
    fn open(&self, board: &Board, cancel: &CancelFlag) -> Result<Box<dyn BoardSession>, crate::opener::OpenError>;
}

/// The step each board is running: board -> the scenario's result should the run be abandoned
/// now (interrupted at that step).
#[derive(Clone, Default)]
pub struct RunningSteps(Arc<Mutex<std::collections::BTreeMap<String, ScenarioResult>>>);

impl RunningSteps {
    fn start(&self, p: &PlannedScenario, board: &str, step: usize, keyword: &str, started_at: &str) {
        if let Ok(mut m) = self.0.lock() {
            let why = format!("interrupted at step {} {keyword} (stopped again: the run was abandoned)", step + 1);
            let mut r = skipped(p, board, why);
            r.status = Status::Interrupted;
            r.wall_started_at = started_at.to_string();
            m.insert(board.to_string(), r);
        }
    }
    fn finish(&self, board: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(board);
        }
    }
    /// What each busy board runs now: (board, scenario, the step's message "step N KEYWORD").
    pub fn current(&self) -> Vec<(String, String, String)> {
        self.0
            .lock()
            .map(|m| {
                m.values()
                    .map(|r| {
                        let step = r
                            .message
                            .as_deref()
                            .and_then(|m| m.strip_prefix("interrupted at "))
                            .and_then(|m| m.split(" (").next())
                            .unwrap_or("")
                            .to_string();
                        (r.board.clone(), r.scenario.clone(), step)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    fn take(&self) -> Vec<ScenarioResult> {
        self.0.lock().map(|mut m| std::mem::take(&mut *m).into_values().collect()).unwrap_or_default()
    }
}

/// Called with each scenario result as it finishes (live progress).
pub type ResultSink = Arc<dyn Fn(&ScenarioResult) + Send + Sync>;

#[derive(Clone)]
pub struct EngineOptions {
    /// Boards run at the same time.
    pub parallel_boards: usize,
    pub lock_dir: PathBuf,
    /// How long to wait for a board another run holds.
    pub lock_wait: Duration,
    /// Step deadline when neither the step nor the scenario sets one.
    pub default_step_timeout: Duration,
    /// Deadline of slow steps (flash, erase, option bytes) when nothing sets one.
    pub default_slow_step_timeout: Duration,
    /// Extra time the engine gives a step past its deadline before declaring it stuck.
    pub grace: Duration,
    pub command: Vec<String>,
    /// Also diagnose scenarios whose steps all passed (and that expect to pass): a cause named
    /// there is a false alarm of a diagnosis rule, and fails the scenario.
    pub audit_diagnosis: bool,
    /// Sees each scenario result as soon as it is there, in finishing order.
    pub on_result: Option<ResultSink>,
    /// Start no scenario after the first failure or rig error (on any board); the ones not
    /// started are reported as skipped, naming the failure that stopped the run.
    pub fail_fast: bool,
    /// Set by a second Ctrl-C / SIGTERM: write the report now, the scenarios still running marked
    /// interrupted at the step they were on, and return without waiting for the boards.
    pub abandon: CancelFlag,
    /// What each board is doing (updated as steps start), for an abandoned run's report.
    pub running: RunningSteps,
    /// Run a failed or errored scenario of a lab board again, up to this many times; a pass after
    /// a retry is marked flaky. Virtual boards are deterministic and never retried.
    pub retries: u32,
}

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("parallel_boards", &self.parallel_boards)
            .field("default_step_timeout", &self.default_step_timeout)
            .field("audit_diagnosis", &self.audit_diagnosis)
            .finish_non_exhaustive()
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            parallel_boards: 2,
            lock_dir: crate::lock::default_lock_dir(),
            lock_wait: Duration::from_secs(0),
            default_step_timeout: Duration::from_secs(10),
            default_slow_step_timeout: Duration::from_secs(120),
            grace: Duration::from_secs(5),
            command: std::env::args().collect(),
            audit_diagnosis: false,
            on_result: None,
            fail_fast: false,
            retries: 0,
            abandon: CancelFlag::new(),
            running: RunningSteps::default(),
        }
    }
}

fn step_timeout(step: &Step, scenario: &hil_config::Scenario, opts: &EngineOptions) -> Duration {
    if let Some(t) = step.timeout {
        return t.std();
    }
    // A wait's deadline is the wait plus the usual margin: a scenario-wide timeout must not cut
    // it short (validation refuses a step timeout shorter than its wait).
    if let Action::Wait(w) = &step.action {
        let base = scenario.timeout.map_or(opts.default_step_timeout, |t| t.std());
        return w.std().saturating_add(base);
    }
    let slow = matches!(step.action, Action::Flash(_) | Action::WriteOptionBytes(_) | Action::ReadoutUnprotect(_));
    match scenario.timeout {
        Some(t) if !slow => t.std(),
        Some(t) => t.std().max(opts.default_slow_step_timeout),
        None if slow => opts.default_slow_step_timeout,
        None => opts.default_step_timeout,
    }
}

/// The boards' info for the report.
pub fn board_info(board: &Board) -> BoardInfo {
    BoardInfo {
        name: board.name.value.clone(),
        chip: board.chip.value.clone(),
        kind: if board.virtual_board.is_some() { "virtual" } else { "lab" }.into(),
        description: board.description.clone(),
        seen: Default::default(),
    }
}

/// Run the plan and write reports into `report_root/<run>/` as scenarios finish.
pub async fn run(
    plans: Vec<BoardPlan>,
    opener: Arc<dyn BoardOpener>,
    report_root: &Path,
    opts: EngineOptions,
    cancel: CancelFlag,
) -> Result<(RunReport, RunDir), hil_report::ReportError> {
    let started = Instant::now();
    let mut report = RunReport {
        schema_version: hil_report::SCHEMA_VERSION,
        run_id: run_id(),
        tool: Tool {
            name: "hil".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            revision: Some(crate::GIT_REVISION.into()),
            host: Some(hil_report::hostname()),
        },
        started_at: hil_report::now_rfc3339(),
        wall_finished_at: None,
        wall_duration_ms: 0,
        status: RunStatus::Running,
        command: opts.command.clone(),
        boards: plans.iter().map(|p| board_info(&p.board)).collect(),
        scenarios: vec![],
        summary: Default::default(),
        conformance: vec![],
    };
    let dir = RunDir::create(report_root, &report)?;
    dir.write_all(&report)?;

    let (tx, mut rx) = mpsc::unbounded_channel::<BoardEvent>();
    let limit = Arc::new(Semaphore::new(opts.parallel_boards.max(1)));
    let stop = FailFast::default();
    let mut tasks = Vec::new();
    for plan in plans {
        let (tx, opener, opts, cancel, limit, stop) =
            (tx.clone(), opener.clone(), opts.clone(), cancel.clone(), limit.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            run_board(plan, opener, opts, cancel, stop, tx).await;
        }));
    }
    drop(tx);
    let mut last_full_write = Instant::now();
    let mut abandoned = false;
    loop {
        let event = tokio::select! {
            e = rx.recv() => match e {
                Some(e) => e,
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if opts.abandon.is_cancelled() {
                    abandoned = true;
                    break;
                }
                continue;
            }
        };
        let result = match event {
            BoardEvent::Seen { board, seen } => {
                if let Some(b) = report.boards.iter_mut().find(|b| b.name == board) {
                    b.seen = seen;
                }
                continue;
            }
            BoardEvent::Finished(result) => *result,
        };
        // The journal first: a sink (or a reader) that sees the result can find it on disk.
        if let Err(e) = dir.append_result(&result) {
            tracing::error!("appending to the run's journal failed: {e}");
        }
        if let Some(sink) = &opts.on_result {
            sink(&result);
        }
        report.scenarios.push(result);
        // The full formats now and then (for someone watching a long lab run in a browser); the
        // journal holds every result meanwhile. Wall time decides only when the files on disk
        // catch up, never what they say.
        if last_full_write.elapsed() >= INTERMEDIATE_REPORT_EVERY {
            report.wall_duration_ms = started.elapsed().as_millis() as u64;
            report.summary = hil_report::Summary::of(&report.scenarios);
            report.conformance = report.conformance_matrix();
            if let Err(e) = dir.write_all(&report) {
                tracing::error!("updating the report failed: {e}");
            }
            last_full_write = Instant::now();
        }
    }
    if abandoned {
        // What already finished, then what was running (no verdict); the boards' threads are left
        // to the process's exit.
        while let Ok(event) = rx.try_recv() {
            if let BoardEvent::Finished(r) = event {
                report.scenarios.push(*r);
            }
        }
        for r in opts.running.take() {
            if let Some(sink) = &opts.on_result {
                sink(&r);
            }
            report.scenarios.push(r);
        }
        report.status = RunStatus::Interrupted;
    } else {
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!("a board task panicked: {e}");
                report.status = RunStatus::Error;
            }
        }
    }
    // Boards finish in whatever order the host schedules them; the final report lists them in
    // the plan's order (each board's scenarios are already in order), so runs compare equal.
    let board_order = |name: &str| report.boards.iter().position(|b| b.name == name).unwrap_or(usize::MAX);
    let mut scenarios = std::mem::take(&mut report.scenarios);
    scenarios.sort_by_key(|s| board_order(&s.board));
    report.scenarios = scenarios;
    report.wall_finished_at = Some(hil_report::now_rfc3339());
    report.wall_duration_ms = started.elapsed().as_millis() as u64;
    if cancel.is_cancelled() {
        report.status = RunStatus::Interrupted;
    }
    report.finish_status();
    dir.write_all(&report)?;
    dir.remove_journal();
    dir.mark_latest(report_root);
    Ok((report, dir))
}

/// How often a running suite's full report files are rewritten (the journal gets every result at
/// once).
const INTERMEDIATE_REPORT_EVERY: Duration = Duration::from_secs(5);

fn run_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:08x}", ((nanos >> 10) as u64 ^ ((std::process::id() as u64) << 20)) as u32)
}

fn skipped(p: &PlannedScenario, board: &str, why: String) -> ScenarioResult {
    let s = &p.loaded.scenario;
    ScenarioResult {
        scenario: s.name.value.clone(),
        board: board.into(),
        file: p.loaded.path.display().to_string(),
        description: s.description.clone(),
        class: s.class.clone(),
        status: Status::Skipped,
        expected: None,
        wall_started_at: hil_report::now_rfc3339(),
        wall_duration_ms: 0,
        message: Some(why),
        steps: vec![],
        diagnosis: None,
        retried: vec![],
        flaky: false,
    }
}

fn errored(p: &PlannedScenario, board: &str, why: String) -> ScenarioResult {
    ScenarioResult { status: Status::Error, ..skipped(p, board, why) }
}

/// A scenario the board could not start: an error, unless Ctrl-C / SIGTERM cut the start short.
fn not_started(p: &PlannedScenario, board: &str, why: String, cancel: &CancelFlag) -> ScenarioResult {
    let status = if cancel.is_cancelled() { Status::Interrupted } else { Status::Error };
    ScenarioResult { status, ..skipped(p, board, why) }
}

/// What a board task tells the run as it goes.
enum BoardEvent {
    Finished(Box<ScenarioResult>),
    /// What the board's session saw (sent when the session closes).
    Seen {
        board: String,
        seen: hil_report::Seen,
    },
}

/// The board tasks' end of the event channel: scenario results go as [`BoardEvent::Finished`].
#[derive(Clone)]
struct Results(mpsc::UnboundedSender<BoardEvent>);

impl Results {
    fn send(&self, r: ScenarioResult) -> Result<(), ()> {
        self.0.send(BoardEvent::Finished(Box::new(r))).map_err(|_| ())
    }
}

/// `--fail-fast`: the first failure of the run, once there is one (shared by the board tasks).
#[derive(Clone, Default)]
struct FailFast(Arc<std::sync::OnceLock<String>>);

impl FailFast {
    /// Why scenarios are no longer started, if they are not.
    fn reason(&self, opts: &EngineOptions) -> Option<String> {
        opts.fail_fast
            .then(|| self.0.get().map(|first| format!("not run: --fail-fast stopped the run after {first}")))
            .flatten()
    }

    fn note(&self, r: &ScenarioResult) {
        if matches!(r.status, Status::Failed | Status::Error) {
            let _ = self.0.set(format!("{} {} on {}", r.scenario, r.status.as_str(), r.board));
        }
    }
}

async fn run_board(
    plan: BoardPlan,
    opener: Arc<dyn BoardOpener>,
    opts: EngineOptions,
    cancel: CancelFlag,
    stop: FailFast,
    events: mpsc::UnboundedSender<BoardEvent>,
) {
    let tx = Results(events.clone());
    let name = plan.board.name.value.clone();
    let runnable: Vec<&PlannedScenario> = plan.scenarios.iter().filter(|p| p.skip.is_none()).collect();
    for p in plan.scenarios.iter().filter(|p| p.skip.is_some()) {
        let _ = tx.send(skipped(p, &name, p.skip.clone().unwrap_or_default()));
    }
    // Waited for a free slot past Ctrl-C: nothing starts after cancellation.
    if runnable.is_empty() || cancel.is_cancelled() {
        return;
    }
    if let Some(why) = stop.reason(&opts) {
        for p in runnable {
            let _ = tx.send(skipped(p, &name, why.clone()));
        }
        return;
    }
    // Lock (a lab board's hardware; a virtual board takes no lock), then open, on the blocking pool.
    let (lock_dir, wait, c) = (opts.lock_dir.clone(), opts.lock_wait, cancel.clone());
    let lock_board = plan.board.clone();
    let lock =
        tokio::task::spawn_blocking(move || BoardLock::acquire(&lock_dir, &lock_board, wait, &|| c.is_cancelled()))
            .await;
    let _lock = match lock {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            for p in runnable {
                let r = not_started(p, &name, e.to_string(), &cancel);
                stop.note(&r);
                let _ = tx.send(r);
            }
            return;
        }
        Err(e) => {
            for p in runnable {
                let _ = tx.send(errored(p, &name, format!("locking the board failed: {e}")));
            }
            return;
        }
    };
    let board = plan.board.clone();
    let (op, c) = (opener.clone(), cancel.clone());
    let session = match tokio::task::spawn_blocking(move || op.open(&board, &c)).await {
        Ok(Ok(s)) => Arc::new(Mutex::new(s)),
        Ok(Err(e)) => {
            for p in runnable {
                let r = not_started(p, &name, format!("cannot open the board: {e}"), &cancel);
                stop.note(&r);
                let _ = tx.send(r);
            }
            return;
        }
        Err(e) => {
            for p in runnable {
                let _ = tx.send(errored(p, &name, format!("opening board `{name}` panicked: {e}")));
            }
            return;
        }
    };
    let mut usable = true;
    // Only a lab board is retried: a virtual board gives the same verdict every time.
    let retries = if plan.board.virtual_board.is_some() { 0 } else { opts.retries };
    for p in runnable {
        if cancel.is_cancelled() {
            break;
        }
        if let Some(why) = stop.reason(&opts) {
            let _ = tx.send(skipped(p, &name, why));
            continue;
        }
        if !usable {
            let _ = tx.send(errored(p, &name, "not run: the board did not come back from a stuck step".into()));
            continue;
        }
        let (mut result, still_usable) = run_scenario(p, &name, session.clone(), &opts, &cancel).await;
        usable = still_usable;
        let mut earlier = Vec::new();
        while matches!(result.status, Status::Failed | Status::Error)
            && (earlier.len() as u32) < retries
            && usable
            && !cancel.is_cancelled()
        {
            tracing::info!(board = %name, scenario = %result.scenario, "retrying after {}", result.status.as_str());
            earlier.push(Attempt {
                status: result.status,
                message: result.message.clone(),
                cause: result.diagnosis.as_ref().map(|d| d.cause.clone()),
                wall_duration_ms: result.wall_duration_ms,
            });
            let (again, still_usable) = run_scenario(p, &name, session.clone(), &opts, &cancel).await;
            (result, usable) = (again, still_usable);
        }
        result.flaky = !earlier.is_empty() && result.status == Status::Passed;
        result.retried = earlier;
        stop.note(&result);
        let _ = tx.send(result);
    }
    let s = session.clone();
    if let Ok(Ok(Some(seen))) = tokio::time::timeout(
        opts.grace,
        tokio::task::spawn_blocking(move || {
            s.lock().ok().map(|mut s| {
                let seen = s.seen();
                s.close();
                seen
            })
        }),
    )
    .await
    {
        let _ = events.send(BoardEvent::Seen { board: name.clone(), seen });
    }
}

/// Run one scenario; returns its result and whether the board session can still be used.
async fn run_scenario(
    p: &PlannedScenario,
    board: &str,
    session: Arc<Mutex<Box<dyn BoardSession>>>,
    opts: &EngineOptions,
    cancel: &CancelFlag,
) -> (ScenarioResult, bool) {
    let s = &p.loaded.scenario;
    let started = Instant::now();
    let started_at = hil_report::now_rfc3339();
    let mut steps: Vec<StepResult> = Vec::new();
    let mut failure: Option<(usize, StepOutcome)> = None;
    // The first step cut off by Ctrl-C / SIGTERM, running or not yet run.
    let mut interrupted: Option<usize> = None;
    // Where the scenario's evidence goes: the last step that ran.
    let mut last_ran: Option<usize> = None;
    let mut usable = true;

    let begin = {
        let (sess, scenario) = (session.clone(), s.clone());
        tokio::task::spawn_blocking(move || {
            let mut sess = sess.lock().map_err(|_| "board session poisoned".to_string())?;
            sess.begin_scenario(&scenario).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("panicked: {e}")))
    };
    if let Err(e) = begin {
        let mut r = errored(p, board, format!("preparing the board for the scenario failed: {e}"));
        r.wall_started_at = started_at;
        return (r, true);
    }

    for (i, located) in s.steps.iter().enumerate() {
        let step = &located.value;
        let offset = started.elapsed();
        if failure.is_some() {
            steps.push(step_result(i, step, Status::NotRun, offset, Duration::ZERO, None, vec![]));
            continue;
        }
        if cancel.is_cancelled() {
            interrupted.get_or_insert(i);
            steps.push(step_result(i, step, Status::Interrupted, offset, Duration::ZERO, None, vec![]));
            continue;
        }
        tracing::debug!(board, scenario = %s.name.value, step = i + 1, "running {}", step.action.summary());
        opts.running.start(p, board, i, step.action.keyword(), &started_at);
        let mut run = exec_step(&session, step, i, p, opts, cancel).await;
        usable = run.usable;
        last_ran = Some(steps.len());
        if cancel.is_cancelled() {
            // Cut off while it ran: whatever it returned (a wait cut short, a failed read), it is
            // no verdict on the board.
            interrupted.get_or_insert(i);
            run.outcome.status = Status::Interrupted;
            run.outcome.message = Some(match run.outcome.message {
                Some(m) => format!("interrupted ({m})"),
                None => "interrupted".into(),
            });
        } else if run.outcome.status != Status::Passed {
            failure = Some((i, run.outcome.clone()));
        }
        let mut r =
            step_result(i, step, run.outcome.status, offset, run.wall, run.outcome.message, run.outcome.evidence);
        set_virtual_span(&mut r, run.virtual_span);
        steps.push(r);
    }

    // Diagnosis of a firmware failure (not of rig errors or interruptions).
    let mut diagnosis = None;
    if let Some((i, outcome)) = &failure
        && outcome.status == Status::Failed
        && usable
        && let Some(step) = s.steps.get(*i)
    {
        diagnosis = diagnose(&session, &step.value, outcome, opts).await;
    }
    // The audit: on a board that did what the scenario expected the rules must name nothing, or
    // exactly the mistake the scenario declares this board tolerates (`expect.latent`).
    // `Some(cause named, if any)` when the audit ran.
    let expects_failure = s.expect.as_ref().is_some_and(|e| e.value.outcome == Outcome::Fail);
    let latent = s.expect.as_ref().and_then(|e| e.value.latent.as_ref()).map(|l| l.value.clone());
    let mut audit: Option<Option<Diagnosis>> = None;
    if opts.audit_diagnosis
        && failure.is_none()
        && usable
        && !expects_failure
        && !cancel.is_cancelled()
        && let Some(last) = s.steps.last()
    {
        let named = diagnose(&session, &last.value, &StepOutcome::passed(), opts).await;
        audit = Some(named.filter(|d| d.cause != "unknown"));
    }
    // Cleanup: whatever happened, so the next scenario starts from a known board.
    let mut cleanup_failure: Option<String> = None;
    for (j, located) in s.cleanup.iter().enumerate() {
        let i = s.steps.len() + j;
        let step = &located.value;
        let offset = started.elapsed();
        if !usable {
            let mut r = step_result(i, step, Status::NotRun, offset, Duration::ZERO, None, vec![]);
            r.cleanup = true;
            steps.push(r);
            continue;
        }
        // Cleanup runs even after Ctrl-C: restoring the board is worth its few seconds.
        tracing::debug!(board, scenario = %s.name.value, step = i + 1, "running {} (cleanup)", step.action.summary());
        opts.running.start(p, board, i, step.action.keyword(), &started_at);
        let run = exec_step(&session, step, i, p, opts, &CancelFlag::new()).await;
        usable = run.usable;
        last_ran = Some(steps.len());
        if run.outcome.status != Status::Passed && cleanup_failure.is_none() {
            cleanup_failure = Some(format!(
                "cleanup step {} {}: {}",
                i + 1,
                step.action.keyword(),
                run.outcome.message.clone().unwrap_or_default()
            ));
        }
        let mut r =
            step_result(i, step, run.outcome.status, offset, run.wall, run.outcome.message, run.outcome.evidence);
        set_virtual_span(&mut r, run.virtual_span);
        r.cleanup = true;
        steps.push(r);
    }

    if usable {
        let sess = session.clone();
        if let Ok(Ok(extra)) = tokio::time::timeout(
            opts.grace,
            tokio::task::spawn_blocking(move || {
                sess.lock().map(|mut s| s.take_scenario_evidence()).unwrap_or_default()
            }),
        )
        .await
            && let Some(last) = last_ran.and_then(|k| steps.get_mut(k))
        {
            last.evidence.extend(extra);
        }
    }

    let observed_fail = failure.as_ref().is_some_and(|(_, o)| o.status == Status::Failed);
    let rig_error = failure.as_ref().filter(|(_, o)| o.status == Status::Error);
    let observed_cause = diagnosis.as_ref().map(|d| d.cause.clone());
    let expect = s.expect.as_ref().map(|e| &e.value);
    let (status, message, expected) = match (rig_error, expect) {
        // No verdict, whatever the scenario expects.
        _ if interrupted.is_some() => {
            (Status::Interrupted, interrupted.map(|i| format!("interrupted at step {} {}", i + 1, step_kw(s, i))), None)
        }
        (Some((i, o)), _) => (
            Status::Error,
            Some(format!("step {} {}: {}", i + 1, step_kw(s, *i), o.message.clone().unwrap_or_default())),
            None,
        ),
        (None, Some(e)) if e.outcome == Outcome::Fail => {
            let want = e.cause.as_ref().map(|c| c.value.clone());
            let exp = ExpectedResult {
                outcome: "fail".into(),
                cause: want.clone(),
                observed_outcome: if observed_fail { "fail" } else { "pass" }.into(),
                observed_cause: observed_cause.clone(),
            };
            if !observed_fail {
                (Status::Failed, Some("expected this scenario to fail, but every step passed".into()), Some(exp))
            } else if want.is_some() && want != observed_cause {
                let seen = observed_cause.clone().unwrap_or_else(|| "no diagnosis".into());
                (
                    Status::Failed,
                    Some(format!(
                        "failed as expected, but the diagnosis is `{seen}` instead of `{}`",
                        want.unwrap_or_default()
                    )),
                    Some(exp),
                )
            } else {
                (
                    Status::Passed,
                    Some(format!("failed as expected with cause `{}`", observed_cause.clone().unwrap_or_default())),
                    Some(exp),
                )
            }
        }
        (None, _) => match &failure {
            Some((i, o)) => (
                Status::Failed,
                Some(format!("step {} {}: {}", i + 1, step_kw(s, *i), o.message.clone().unwrap_or_default())),
                None,
            ),
            // Every step passed, but the audit that completes the verdict was cut off.
            None if opts.audit_diagnosis && audit.is_none() && cancel.is_cancelled() => {
                (Status::Interrupted, Some("interrupted before the diagnosis audit".into()), None)
            }
            None => match (&audit, &latent) {
                (Some(Some(d)), None) => (
                    Status::Failed,
                    Some(format!(
                        "false alarm: every step passed, yet the diagnosis names `{}` ({})",
                        d.cause, d.title
                    )),
                    None,
                ),
                (Some(d), Some(want)) if d.as_ref().is_none_or(|d| &d.cause != want) => (
                    Status::Failed,
                    Some(format!(
                        "the latent mistake `{want}` was not named: the diagnosis says `{}`",
                        d.as_ref().map_or("unknown", |d| d.cause.as_str())
                    )),
                    None,
                ),
                (Some(Some(d)), Some(_)) => (
                    Status::Passed,
                    Some(format!("passed; the diagnosis names the latent mistake `{}`", d.cause)),
                    None,
                ),
                _ => (Status::Passed, None, None),
            },
        },
    };
    let (status, message) = match cleanup_failure {
        Some(c) if status == Status::Passed => (Status::Error, Some(c)),
        Some(c) => (status, Some(format!("{}; {c}", message.unwrap_or_default()))),
        None => (status, message),
    };
    let result = ScenarioResult {
        scenario: s.name.value.clone(),
        board: board.into(),
        file: p.loaded.path.display().to_string(),
        description: s.description.clone(),
        class: s.class.clone(),
        status,
        expected,
        wall_started_at: started_at,
        wall_duration_ms: started.elapsed().as_millis() as u64,
        message,
        steps,
        diagnosis: diagnosis.or(audit.flatten()),
        retried: vec![],
        flaky: false,
    };
    opts.running.finish(board);
    (result, usable)
}

/// Snapshot the board and name a cause for `outcome` of `step`, on the blocking pool and within
/// the default step deadline (`None` when the board cannot be asked in time).
async fn diagnose(
    session: &Arc<Mutex<Box<dyn BoardSession>>>,
    step: &Step,
    outcome: &StepOutcome,
    opts: &EngineOptions,
) -> Option<Diagnosis> {
    let (sess, st, o) = (session.clone(), step.clone(), outcome.clone());
    tokio::time::timeout(
        opts.default_step_timeout,
        tokio::task::spawn_blocking(move || sess.lock().ok().and_then(|mut s| s.diagnose(&st, &o))),
    )
    .await
    .ok()
    .and_then(|r| r.ok())
    .flatten()
}

/// Run one step on the blocking pool under its deadline. Returns the outcome, how long it took,
/// and whether the board came back (a backend that ignores its deadline keeps the board).
/// The wall-clock limit of a step whose deadline is on a virtual board's clock: generous (30x the
/// budget, at least a minute, plus the grace), above the board's own net for each wait
/// (hil_virtual_board::board::wall_safety_net), because it only catches a rig or host that stopped
/// making progress.
pub fn virtual_safety_net(budget: Duration, grace: Duration) -> Duration {
    budget.saturating_mul(30).max(Duration::from_secs(60)).saturating_add(grace)
}

/// What one step did, with its times.
struct StepRun {
    outcome: StepOutcome,
    wall: Duration,
    /// The board's clock at the start and end of the step, when it is virtual.
    virtual_span: Option<(Duration, Duration)>,
    /// Whether the board came back.
    usable: bool,
}

async fn exec_step(
    session: &Arc<Mutex<Box<dyn BoardSession>>>,
    step: &Step,
    index: usize,
    p: &PlannedScenario,
    opts: &EngineOptions,
    cancel: &CancelFlag,
) -> StepRun {
    let limit = step_timeout(step, &p.loaded.scenario, opts);
    let (sess, st, cancel2, file) = (session.clone(), step.clone(), cancel.clone(), p.loaded.path.clone());
    // The safety net depends on the board's clock; learn its kind before waiting.
    let clock_kind = {
        let sess = session.clone();
        tokio::task::spawn_blocking(move || sess.lock().map(|s| s.clock().kind()).unwrap_or(ClockKind::Wall))
            .await
            .unwrap_or(ClockKind::Wall)
    };
    let safety_net = match clock_kind {
        ClockKind::Wall => limit + opts.grace,
        ClockKind::Virtual => virtual_safety_net(limit, opts.grace),
    };
    let handle = tokio::task::spawn_blocking(move || match sess.lock() {
        Ok(mut s) => {
            let clock = s.clock();
            let start = clock.now();
            let cx = StepCx::new(&clock, limit, cancel2, file, index);
            let outcome = s.run_step(&st, &cx);
            let end = clock.now();
            let span = (clock.kind() == ClockKind::Virtual && end != Duration::MAX).then_some((start, end));
            (outcome, span)
        }
        Err(_) => (StepOutcome::error("board session poisoned by an earlier panic"), None),
    });
    let t0 = Instant::now();
    let mut usable = true;
    let mut virtual_span = None;
    let outcome = match tokio::time::timeout(safety_net, handle).await {
        Ok(Ok((o, span))) => {
            virtual_span = span;
            o
        }
        Ok(Err(e)) => StepOutcome::error(format!("the step panicked: {e}")),
        Err(_) => {
            // The backend missed its own deadline; wait a little more for it to give the board back.
            let back = tokio::time::timeout(opts.grace, {
                let sess = session.clone();
                tokio::task::spawn_blocking(move || drop(sess.lock()))
            })
            .await
            .is_ok();
            usable = back;
            StepOutcome::error(format!(
                "step did not finish within {} of wall time (its deadline: {} on the board's {} clock){}",
                humantime(safety_net),
                humantime(limit),
                if clock_kind == ClockKind::Virtual { "virtual" } else { "wall" },
                if back { "" } else { "; the board is stuck and its remaining scenarios are not run" }
            ))
        }
    };
    StepRun { outcome, wall: t0.elapsed(), virtual_span, usable }
}

fn step_kw(s: &hil_config::Scenario, i: usize) -> String {
    s.steps.get(i).map(|st| st.value.action.keyword().to_string()).unwrap_or_else(|| "-".into())
}

fn step_result(
    index: usize,
    step: &Step,
    status: Status,
    offset: Duration,
    duration: Duration,
    message: Option<String>,
    evidence: Vec<Evidence>,
) -> StepResult {
    StepResult {
        index,
        cleanup: false,
        keyword: step.action.keyword().into(),
        summary: step.action.summary(),
        name: step.name.clone(),
        status,
        wall_offset_ms: offset.as_millis() as u64,
        wall_duration_ms: duration.as_millis() as u64,
        virtual_start_us: None,
        virtual_end_us: None,
        message,
        evidence,
    }
}

fn set_virtual_span(r: &mut StepResult, span: Option<(Duration, Duration)>) {
    if let Some((start, end)) = span {
        r.virtual_start_us = Some(start.as_micros() as u64);
        r.virtual_end_us = Some(end.as_micros() as u64);
    }
}

fn humantime(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// Convenience for callers: run a validated config on the selected boards.
pub async fn run_config(
    config: &Config,
    boards: &[&Board],
    opener: Arc<dyn BoardOpener>,
    report_root: &Path,
    opts: EngineOptions,
    cancel: CancelFlag,
) -> Result<(RunReport, RunDir), hil_report::ReportError> {
    run(crate::plan::plan(config, boards), opener, report_root, opts, cancel).await
}
