//! Event-manager glue: one subscriber per virtio device, watching its queue
//! ioeventfds and whatever host fds the device registers.

use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::MmioTransport;

/// Serves one device's queue notifications and host events on an event-manager loop.
#[derive(Debug)]
pub struct VirtioSubscriber {
    transport: Arc<Mutex<MmioTransport>>,
}

impl VirtioSubscriber {
    /// Serves `transport`.
    pub fn new(transport: Arc<Mutex<MmioTransport>>) -> Self {
        Self { transport }
    }
}

impl MutEventSubscriber for VirtioSubscriber {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut t = self.transport.lock().unwrap_or_else(|p| p.into_inner());
        let fd = events.fd();
        if let Some(i) = t.queue_evts().iter().position(|e| {
            use std::os::unix::io::AsRawFd;
            e.as_raw_fd() == fd
        }) {
            // Reset the counter first: a notification that lands while we work is then
            // seen on the next round instead of being lost.
            let _ = t.queue_evts()[i].read();
            t.process_queue(i, Some(ops));
        } else if t.owns_fd(fd) {
            t.process_host_event(events, ops);
        } else {
            // Not ours (cannot happen): stop watching it rather than spin.
            let _ = ops.remove(events);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let mut t = self.transport.lock().unwrap_or_else(|p| p.into_inner());
        // A vhost-user backend reads them itself.
        let queues = if t.backend_serves_queues() {
            &[][..]
        } else {
            t.queue_evts()
        };
        for e in queues {
            // A fresh eventfd on a fresh epoll: fails only on ENOMEM, and then the
            // device is just never served.
            let _ = ops.add(Events::new(e, EventSet::IN));
        }
        t.init_host_events(ops);
    }
}
