//! The service's tasks, each with a name, so that a slow stop says which stage held it.
//!
//! A box is stopped at every reboot, and an update's reboot waits for that stop: a stage that takes
//! seconds to drain delays the whole box. [`Tasks::drain`] logs how long each stage took to end and,
//! when the limit runs out, which ones were still running.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::{Id, JoinSet};

/// A [`JoinSet`] of named tasks.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<()>,
    running: Vec<(Id, String)>,
}

/// How a drain ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every task ended (a panicked one is logged and counts as ended).
    All,
    /// The limit passed; these tasks were still running (async ones end when the set is dropped; a blocking
    /// one cannot be stopped from outside).
    TimedOut(Vec<String>),
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns an async task named `name` (a stage: "publisher", "camera cam1").
    pub fn spawn(&mut self, name: impl Into<String>, task: impl Future<Output = ()> + Send + 'static) {
        let id = self.set.spawn(task).id();
        self.running.push((id, name.into()));
    }

    /// Spawns a blocking task (a capture or detector thread) named `name`.
    pub fn spawn_blocking(&mut self, name: impl Into<String>, task: impl FnOnce() + Send + 'static) {
        let id = self.set.spawn_blocking(task).id();
        self.running.push((id, name.into()));
    }

    /// The names of the tasks not yet ended, in the order they were spawned.
    pub fn running(&self) -> Vec<&str> {
        self.running.iter().map(|(_, n)| n.as_str()).collect()
    }

    /// Waits until every task has ended or `limit` has passed, logging each stage's stop time.
    pub async fn drain(&mut self, limit: Duration) -> Drained {
        let started = Instant::now();
        let mut took: Vec<(String, Duration)> = Vec::new();
        let joined = tokio::time::timeout(limit, async {
            while let Some(res) = self.set.join_next_with_id().await {
                let id = match &res {
                    Ok((id, ())) => *id,
                    Err(e) => e.id(),
                };
                let Some(i) = self.running.iter().position(|(t, _)| *t == id) else { continue };
                let (_, name) = self.running.remove(i);
                if let Err(e) = res {
                    tracing::error!(task = %name, "task ended abnormally: {e}");
                }
                took.push((name, started.elapsed()));
            }
        })
        .await;
        if joined.is_ok() {
            // The last to end held the stop: name them, so a slow stop says where to look.
            let last: Vec<String> = took.iter().rev().take(3).map(|(n, d)| format!("{n} {:.1} s", d.as_secs_f64())).collect();
            tracing::info!("every stage stopped in {:.1} s (last: {})", started.elapsed().as_secs_f64(), last.join(", "));
            return Drained::All;
        }
        Drained::TimedOut(std::mem::take(&mut self.running).into_iter().map(|(_, n)| n).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_names_the_tasks_that_outlive_it() {
        let mut tasks = Tasks::new();
        tasks.spawn("quick", async {});
        tasks.spawn_blocking("blocking", || std::thread::sleep(Duration::from_millis(10)));
        tasks.spawn("stuck", std::future::pending());
        assert_eq!(tasks.running().len(), 3);
        assert_eq!(tasks.drain(Duration::from_millis(300)).await, Drained::TimedOut(vec!["stuck".to_string()]));
    }

    #[tokio::test]
    async fn a_drain_of_tasks_that_end_is_complete() {
        let mut tasks = Tasks::new();
        tasks.spawn("a", async {});
        tasks.spawn("b", tokio::time::sleep(Duration::from_millis(20)));
        assert_eq!(tasks.drain(Duration::from_secs(5)).await, Drained::All);
        assert!(tasks.running().is_empty());
    }
}
