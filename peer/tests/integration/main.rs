//! The peer's integration tests, in one test binary so `cargo test` links the world once:
//! a real tracker (in-process, or as `tracker` processes in `failover`) and real `peer`
//! processes or in-process nodes on 127.0.0.1, checked against what users and operators
//! are promised. The harness is `common`; each other module is one area of the contract.
//!
//! Run one area with `cargo test -p peer --test integration e2e::`.

mod audit;
mod certificates;
mod common;
mod dashboard;
mod e2e;
mod failover;
mod faults;
mod faults_tracker_disk;
mod first_steps;
mod flood;
mod folders;
mod get_end;
mod get_output;
mod holdings;
mod layout;
mod lying_tracker;
mod names;
mod node_in_process;
mod operator;
mod outage;
mod outage_db;
mod packaging;
mod reference;
mod replication;
mod slow_streams;
mod super_seed;
mod terminal_text;
mod tickets;
mod tls;
mod waiting;
