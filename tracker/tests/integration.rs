//! Contract tests of the tracker: real sockets, a real SQLite file in a temp dir (and
//! PostgreSQL for the persistence test when `TRACKER_TEST_DATABASE_URL` is set). One test
//! binary: the harness in `common`, then the gRPC, REST and command-line contracts, and hostile input.

mod cli;
mod common;
mod grpc;
mod hostile;
mod rest;
