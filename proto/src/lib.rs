//! Generated gRPC types and stubs. Nothing else lives here: the adapters in `tracker` and
//! `peer` convert these types to `common` ones at their edges.
//!
//! `bytes` fields are `bytes::Bytes`, so chunk data moves without copies.

#![allow(clippy::all)]

pub mod tracker {
    pub mod v1 {
        tonic::include_proto!("tracker.v1");
    }
}

pub mod peer {
    pub mod v1 {
        tonic::include_proto!("peer.v1");
    }
}
