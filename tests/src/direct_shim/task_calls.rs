//! The Task calls and request pieces most tests share: runc `Options` for this shim, a
//! bundle's terminal and an exec's spec, Create and Start (with stdout into a FIFO the test
//! holds), and the force-kill, Wait, Delete and Shutdown with which containerd ends a task.

use super::{ctx, DirectShim, RUNC_OPTIONS};
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options;
use std::fs;
use std::path::Path;

impl DirectShim {
    /// runc `Options` naming `binary` and this shim's private runc root.
    pub fn options(&self, binary: &Path) -> Any {
        let mut o = Options::new();
        o.binary_name = binary.to_string_lossy().into_owned();
        o.root = self.leftovers.runc_root.to_string_lossy().into_owned();
        let mut any = Any::new();
        any.type_url = RUNC_OPTIONS.into();
        any.value = o.write_to_bytes().expect("encode runc Options");
        any
    }

    /// Sets `process.terminal` in the bundle's config (before Create).
    pub fn set_terminal(&self, terminal: bool) {
        let path = self.bundle().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).expect("read config.json"))
                .expect("config.json is JSON");
        config["process"]["terminal"] = serde_json::json!(terminal);
        fs::write(&path, config.to_string()).expect("write config.json");
    }

    /// The spec of an exec running `args`, from the bundle's own process (its env, user,
    /// capabilities), as containerd sends it in `ExecProcessRequest.spec`.
    pub fn exec_spec(&self, args: &[&str], terminal: bool) -> Any {
        let config: serde_json::Value = serde_json::from_slice(
            &fs::read(self.bundle().join("config.json")).expect("read config.json"),
        )
        .expect("config.json is JSON");
        let mut process = config["process"].clone();
        process["args"] = serde_json::json!(args);
        process["terminal"] = serde_json::json!(terminal);
        let mut any = Any::new();
        any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        any.value = serde_json::to_vec(&process).expect("encode the process spec");
        any
    }

    /// Creates task `id` (real runc) with its stdout into a FIFO the test holds open
    /// and does not read yet; returns the FIFO's read end (non-blocking). Output beyond
    /// what the FIFO holds goes to the shim's spool until the test reads.
    pub fn create_with_stdout_fifo(&self, id: &str) -> fs::File {
        use std::os::unix::fs::OpenOptionsExt;
        let fifo = self.dir().join("stdout");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo stdout");
        let reader = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .expect("open the stdout FIFO");
        let mut create = api::CreateTaskRequest::new();
        create.id = id.into();
        create.bundle = self.bundle().to_string_lossy().into_owned();
        create.stdout = fifo.to_string_lossy().into_owned();
        create.options = Some(self.options(&crate::require::tool("runc", "runc"))).into();
        self.client
            .create(ctx(), &create)
            .unwrap_or_else(|e| panic!("Create {id}: {e}\n{}", self.log()));
        reader
    }

    /// Start of task `id`; returns its pid.
    pub fn start_task(&self, id: &str) -> u32 {
        let mut start = api::StartRequest::new();
        start.id = id.into();
        self.client
            .start(ctx(), &start)
            .unwrap_or_else(|e| panic!("Start {id}: {e}\n{}", self.log()))
            .pid
    }

    /// Create (with `options`) and Start of task `id`; returns its pid.
    pub fn create_and_start(&self, id: &str, options: Any) -> u32 {
        let mut create = api::CreateTaskRequest::new();
        create.id = id.into();
        create.bundle = self.bundle().to_string_lossy().into_owned();
        create.options = Some(options).into();
        self.client
            .create(ctx(), &create)
            .unwrap_or_else(|e| panic!("Create {id}: {e}"));
        let mut start = api::StartRequest::new();
        start.id = id.into();
        self.client
            .start(ctx(), &start)
            .unwrap_or_else(|e| panic!("Start {id}: {e}"))
            .pid
    }

    /// SIGKILLs task `id`'s init and waits for its exit, as containerd's force-kill does.
    pub fn kill_and_wait(&self, id: &str) -> api::WaitResponse {
        let mut kill = api::KillRequest::new();
        kill.id = id.into();
        kill.signal = libc::SIGKILL as u32;
        self.client.kill(ctx(), &kill).expect("Kill");
        let mut wait = api::WaitRequest::new();
        wait.id = id.into();
        self.client.wait(ctx(), &wait).expect("Wait")
    }

    /// Ends task `id` and the shim as containerd does after a force-kill: SIGKILL, Wait,
    /// Delete, then Shutdown (the shim exits once nothing is in flight).
    pub fn kill_delete_and_shut_down(&self, id: &str) {
        self.kill_and_wait(id);
        self.wait_delete_and_shut_down(id);
    }

    /// Waits for task `id`'s exit, Deletes it and Shuts the shim down, as containerd does
    /// once the task exited; returns the exit status Wait gave.
    pub fn wait_delete_and_shut_down(&self, id: &str) -> u32 {
        let mut wait = api::WaitRequest::new();
        wait.id = id.into();
        let status = self.client.wait(ctx(), &wait).expect("Wait").exit_status;
        let mut delete = api::DeleteRequest::new();
        delete.id = id.into();
        self.client
            .delete(ctx(), &delete)
            .unwrap_or_else(|e| panic!("Delete {id}: {e}\n{}", self.log()));
        self.client
            .shutdown(ctx(), &api::ShutdownRequest::new())
            .expect("Shutdown");
        status
    }
}
