//! Standalone supervisor: a tty process resized through `winsz` sees the new size.

use std::io::Write;
use std::time::Duration;
use tether_tests::StandaloneEnv;

#[test]
fn a_tty_process_sees_the_size_sent_on_winsz() {
    let env = StandaloneEnv::new();
    let id = env.id("tty");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    let process = bundle.exec_process(&["sh", "-c", "read x; stty size; exit 3"], true);
    env.exec(&id, "t", &process);

    // A manager that knows only the directory.
    let dir = env.process_dir(&id, "t");
    let mut winsz = fifo::open_write_timeout(&dir.join("winsz"), Duration::from_secs(5)).unwrap();
    winsz.write_all(br#"{"columns":123,"rows":45}"#).unwrap();
    winsz.write_all(b"\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut stdin = fifo::open_write_timeout(&dir.join("stdin"), Duration::from_secs(5)).unwrap();
    stdin.write_all(b"go\n").unwrap();

    let out = env.output("attach", &[&id, "t"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("45 123"), "stty size said: {text:?}");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(env.output("wait", &[&id, "t"]).status.code(), Some(3));
}

#[test]
fn exec_tty_flag_and_resize_twice() {
    let env = StandaloneEnv::new();
    let id = env.id("tty2");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    let process = bundle.exec_process(&["sh", "-c", "read x; stty size; read y; stty size"], false);
    let file = env.runc_env().dir().join("p.json");
    std::fs::write(&file, serde_json::to_vec(&process).unwrap()).unwrap();
    env.ok(
        "exec",
        &["--tty", "--process", file.to_str().unwrap(), &id, "t"],
    );
    let dir = env.process_dir(&id, "t");
    let mut winsz = fifo::open_write_timeout(&dir.join("winsz"), Duration::from_secs(5)).unwrap();
    let mut stdin = fifo::open_write_timeout(&dir.join("stdin"), Duration::from_secs(5)).unwrap();
    winsz.write_all(br#"{"columns":80,"rows":20}"#).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"a\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Split across writes, as a manager may send it.
    winsz.write_all(br#"{"columns":2"#).unwrap();
    winsz.write_all(br#"00,"rows":50}"#).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"b\n").unwrap();
    let out = env.output("attach", &[&id, "t"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let sizes: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.split(' ').count() == 2 && l.split(' ').all(|w| w.parse::<u32>().is_ok()))
        .collect();
    assert_eq!(sizes, ["20 80", "50 200"], "{text:?}");
    assert_eq!(out.status.code(), Some(0));
}
