//! The supervisor's loop: pumps, `winsz`, `control`, signals and the exit; then the
//! linger until a manager has read what is buffered.

use super::*;

impl Supervisor {
    /// The process's ends of its output (pipe read ends or the pty master), for the keeper.
    pub(super) fn process_output_ends(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        let mut ends = self.stdio.output_sources();
        if let Some(m) = &self.master {
            ends.push(m.as_fd());
        }
        ends
    }

    pub(super) fn register(&mut self) -> std::io::Result<()> {
        let poller = self.base.poller();
        self.stdio.register(poller, SLOT).map_err(|u| u.error)?;
        if let Some(w) = &self.winsz {
            poller.add_readable(w.as_fd(), Token::Fifo(WINSZ))?;
        }
        if let Some(c) = &self.control {
            poller.add_readable(c.as_fd(), Token::Fifo(CONTROL_FIFO))?;
        }
        if let Some(outer) = self.pea.as_ref().and_then(|p| p.outer.as_ref()) {
            poller.add_readable(outer.as_fd(), Token::Fifo(OUTER_INIT))?;
        }
        Ok(())
    }

    /// The event loop; returns when the process has exited and its output is delivered
    /// (or a termination signal came after the exit).
    pub(super) fn run(&mut self) {
        // Output that arrived before the loop.
        let ended = self.stdio.run_all(self.base.poller());
        if ended.contains(Stream::Stdin) {
            self.on_stdin_done();
        }
        let mut events: Vec<Ready> = Vec::new();
        loop {
            let linger = self.exited.then(|| Instant::now() + LINGER_POLL);
            let deadline = [linger, self.stdio.next_recheck()]
                .into_iter()
                .flatten()
                .min();
            if self.base.wait(deadline, &mut events).is_err() {
                break;
            }
            for ev in &events {
                match ev.token {
                    Token::Signals => self.on_signals(),
                    Token::Fifo(WINSZ) => self.on_winsz(),
                    Token::Fifo(CONTROL_FIFO) => self.on_control(),
                    Token::Fifo(OUTER_INIT) => self.on_outer_exit(),
                    Token::Stdio(_, stream) => self.run_stream(stream),
                    _ => {}
                }
            }
            for stream in self.stdio.due_rechecks(Instant::now()) {
                self.run_stream(stream);
            }
            self.drops.update(&self.stdio);
            if self.exited && self.linger_done() {
                break;
            }
        }
        self.drops.finish(&self.stdio);
    }

    fn run_stream(&mut self, stream: Stream) {
        let ended = self.stdio.run(self.base.poller(), stream);
        if ended.is_some() && stream == Stream::Stdin {
            self.on_stdin_done();
        }
    }

    /// The stdin pump has ended (dropping it closed the process's stdin pipe). When that
    /// was a manager's `close-stdin`, a tty process gets its EOF character: its pty stays.
    fn on_stdin_done(&mut self) {
        if let (true, Some(m)) = (self.stdin_closing, &self.master) {
            // Best effort: a full input queue (the process reads nothing) only loses an
            // EOF the process was never going to read.
            let _ = pty_eof::send(m.as_fd());
        }
    }

    /// The outer container's init has exited: a pea does not outlive it. (One sharing
    /// its pid namespace was killed with it already.)
    fn on_outer_exit(&mut self) {
        let Some(outer) = self.pea.as_mut().and_then(|p| p.outer.take()) else {
            return;
        };
        self.base.poller().remove(outer.as_fd());
        if !self.exited {
            log::info!("the container's init exited: killing pea {}", self.pid);
            // Our unreaped child: the pid is still its own.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }

    fn on_control(&mut self) {
        let Some(c) = &mut self.control else { return };
        let mut buf = [0u8; 256];
        let mut requests = Vec::new();
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => requests.extend(self.requests.push(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        for request in requests {
            match request {
                Request::CloseStdin => self.close_stdin(),
            }
        }
    }

    /// Lets go of the `stdin` FIFO: the pump reaches EOF once no manager writes to it
    /// either and everything written has been moved on.
    fn close_stdin(&mut self) {
        if self.stdin_closing {
            return;
        }
        self.stdin_closing = true;
        self.stdin_hold = None;
        // No edge will come if there was no other writer: look now.
        self.run_stream(Stream::Stdin);
    }

    fn on_winsz(&mut self) {
        let Some(w) = &mut self.winsz else { return };
        let mut buf = [0u8; 1024];
        loop {
            match w.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for size in self.decoder.push(&buf[..n]).into_iter().flatten() {
                        if let Some(m) = &self.master {
                            let _ = tty::resize(m.as_fd(), size.columns, size.rows);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    fn on_signals(&mut self) {
        let signals = self.base.signals();
        for sig in &signals {
            if *sig != Signal::SIGCHLD && self.exited {
                self.stop
                    .get_or_insert_with(|| DeleteLinger::new(Instant::now()));
            }
        }
        for exit in self.reaper.reap() {
            if exit.pid == self.pid && !self.exited {
                self.on_exit(exit.record());
            }
        }
    }

    /// The process exited: record it, close `exit`, stop taking input.
    fn on_exit(&mut self, record: ExitRecord) {
        let poller = self.base.poller();
        // Move what is already in the process pipes before anything else (saves a
        // wakeup), and start the grace its output gets.
        self.stdio.exited(poller, Instant::now(), DRAIN_GRACE);
        if let Some(pea) = self.pea.take() {
            if let Some(outer) = &pea.outer {
                poller.remove(outer.as_fd());
            }
            // Before `exitcode`: once a waiter sees the exit, the pea's runc container
            // (state, cgroups, what is left in them) is gone too.
            match pea.runc.delete(&pea.runc_id, true) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => log::warn!("cannot delete the pea's runc container: {e}"),
            }
        }
        let _ = self.dir.write_exit(&record);
        self.exit_hold = None;
        self.stdio.close(poller, Stream::Stdin);
        self.stdin_hold = None;
        if let Some(w) = self.winsz.take() {
            poller.remove(w.as_fd());
        }
        self.winsz_hold = None;
        // After `exitcode`: a manager whose request finds no reader knows the process
        // has exited.
        if let Some(c) = self.control.take() {
            poller.remove(c.as_fd());
        }
        self.control_hold = None;
        self.master = None;
        self.exited = true;
    }

    /// After the exit: closes each FIFO once its pump has finished (or, after the grace,
    /// been abandoned with an idle source) and a manager has read everything in it. True
    /// when all are closed, or after a termination signal once no manager is taking
    /// spooled output (bounded).
    fn linger_done(&mut self) -> bool {
        if !self.exited {
            return false;
        }
        if let Some(linger) = &self.stop {
            match linger.check(self.stdio.backlog(), Instant::now()) {
                Linger::Wait(_) => {}
                Linger::Drained => return true,
                Linger::Drop { spooled, why } => {
                    log::warn!("delete: {spooled} spooled bytes dropped unread ({why})");
                    return true;
                }
            }
        }
        self.stdio
            .abandon_idle_outputs(self.base.poller(), Instant::now());
        for (stream, out) in Stream::OUTPUTS.into_iter().zip(&mut self.outputs) {
            if !self.stdio.is_open(stream) && out.unread() == 0 {
                out.close();
            }
        }
        self.outputs.iter().all(OutputFifo::closed)
    }
}
