//! Contract tests of the tracker: real sockets, a real SQLite file in a temp dir, or with
//! `TRACKER_TEST_BACKEND=postgres` a fresh PostgreSQL database per test under
//! `TRACKER_TEST_DATABASE_URL`. One test binary: the harness in `common`, then the gRPC,
//! REST and command-line contracts, hostile input, several trackers on one database,
//! database outages, and the `tracker` commands of the packaging files.

mod cli;
mod cluster;
mod common;
mod grpc;
mod hostile;
mod outage;
mod packaging;
mod rest;
