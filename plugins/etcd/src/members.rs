//! Routing around a hung member. A member that accepts connections but never answers
//! (stopped, swapping, wedged) keeps its HTTP/2 connection open, so the client's
//! balancer keeps sending it requests until keep-alive gives up (etcd refuses pings
//! more often than every 5 s). Instead, each member gets its own small client that
//! asks for its status every 300 ms; a member that misses two in a row is taken out
//! of the main client's balancer, and put back when it answers again. At least one
//! member always stays in.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use kvs_plugin_api::log;

/// How often each member is asked, and how long it has to answer.
const EVERY: Duration = Duration::from_millis(300);
const ANSWER_WITHIN: Duration = Duration::from_millis(400);
/// Missed answers in a row that take a member out.
const MISSES: u32 = 2;

/// Starts one checking task per endpoint on the current runtime.
pub(crate) fn watch_members(
    main: &Client,
    endpoints: &[String],
    options: ConnectOptions,
) -> Vec<tokio::task::JoinHandle<()>> {
    if endpoints.len() < 2 {
        return Vec::new(); // nothing to route to instead
    }
    let routed = Arc::new(AtomicUsize::new(endpoints.len()));
    endpoints
        .iter()
        .map(|endpoint| {
            tokio::spawn(check(
                main.clone(),
                endpoint.clone(),
                options.clone(),
                routed.clone(),
            ))
        })
        .collect()
}

async fn check(main: Client, endpoint: String, options: ConnectOptions, routed: Arc<AtomicUsize>) {
    let options = options
        .with_connect_timeout(ANSWER_WITHIN)
        .with_timeout(ANSWER_WITHIN);
    let mut client = None;
    let mut misses = 0;
    let mut in_balancer = true;
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if client.is_none() {
            client = Client::connect([endpoint.as_str()], Some(options.clone()))
                .await
                .ok();
        }
        // A member that answers but has no leader (cut off from the majority) is no
        // use either: it can neither commit nor deliver.
        let answered = match client.as_mut() {
            Some(c) => tokio::time::timeout(ANSWER_WITHIN, c.status())
                .await
                .is_ok_and(|r| r.is_ok_and(|s| s.leader() != 0)),
            None => false,
        };
        if answered {
            misses = 0;
            if !in_balancer && main.add_endpoint(&endpoint).await.is_ok() {
                in_balancer = true;
                routed.fetch_add(1, Ordering::AcqRel);
                log::info(&format!(
                    "etcd member {endpoint} answers again: back in use"
                ));
            }
            continue;
        }
        misses += 1;
        if misses >= MISSES && in_balancer {
            // Keep at least one member: with none, nothing could be tried at all.
            let taken = routed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n > 1).then(|| n - 1)
                })
                .is_ok();
            if taken {
                if main.remove_endpoint(&endpoint).await.is_ok() {
                    in_balancer = false;
                    log::warn(&format!(
                        "etcd member {endpoint} has not answered for {} ms: routing around it",
                        (EVERY * MISSES).as_millis()
                    ));
                } else {
                    routed.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        // A client whose member does not answer may hold a dead connection: start over.
        client = None;
    }
}
