//! Standalone supervisor: many processes in one container, each with its own directory.

use std::sync::Arc;
use tether_tests::StandaloneEnv;

#[test]
fn twenty_concurrent_processes_all_exit_codes_right() {
    let env = Arc::new(StandaloneEnv::new());
    let id = env.id("many");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    let threads: Vec<_> = (0..20)
        .map(|n| {
            let env = env.clone();
            let id = id.clone();
            let process = bundle.exec_process(
                &[
                    "sh",
                    "-c",
                    &format!("echo out-{n}; echo err-{n} >&2; sleep 0.5; exit {n}"),
                ],
                false,
            );
            std::thread::spawn(move || {
                let pname = format!("p{n}");
                env.exec(&id, &pname, &process);
                let wait = env.output("wait", &[&id, &pname]);
                assert_eq!(wait.status.code(), Some(n), "wait {pname}");
                let out = env.output("attach", &[&id, &pname]);
                assert_eq!(out.status.code(), Some(n), "attach {pname}");
                assert_eq!(String::from_utf8_lossy(&out.stdout), format!("out-{n}\n"));
                assert_eq!(String::from_utf8_lossy(&out.stderr), format!("err-{n}\n"));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a process thread failed");
    }
    let ps = env.ok("ps", &["--json", &id]);
    let ps: serde_json::Value = serde_json::from_str(&ps).unwrap();
    let procs = ps.as_array().unwrap();
    assert_eq!(procs.len(), 21);
    for p in procs {
        let name = p["id"].as_str().unwrap();
        if let Some(n) = name.strip_prefix('p') {
            assert_eq!(p["exit_code"], n.parse::<i64>().unwrap(), "{p}");
            assert_eq!(p["status"], "exited");
        } else {
            assert_eq!(p["status"], "running");
        }
    }
}
