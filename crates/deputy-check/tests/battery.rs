//! The battery through the library API, against Deputy's engine (run from
//! this test executable by deputy-testkit's scripted agent, whose engine
//! also offers the `shell` model the command checks use).

use deputy_check::{Options, Outcome, Protocol};
use deputy_testkit::ScriptedAgent;

#[test]
fn the_engine_passes_every_check_of_the_library_battery() {
    let argv = ScriptedAgent::new().argv();
    let mut options = Options::new(argv[0].clone(), argv[1..].iter().cloned());
    // This test process runs other tests' children too: no subreaper here.
    options.adopt_orphans = false;
    assert_eq!(options.protocol, Protocol::Deputy);
    let report = deputy_check::run(&options);
    assert!(report.passed(), "{}", report.table(true));
    assert_eq!(report.ids(Outcome::Skip), Vec::<&str>::new(), "{}", report.table(false));
    assert_eq!(report.checks.len(), 31);
    assert!(report.get("interrupt").unwrap().evidence.contains("turn_aborted (interrupted)"));
    let json = report.to_json();
    assert_eq!(json["passed"], true);
}
