//! `ProfileService` as this server answers it: replies carrying each profile already
//! encoded (the profile index's `encoded_profile`).
//! A field holding an encoded message and the message itself are the same bytes on
//! the wire, so clients decode these replies as `GetProfileResponse` and
//! `BatchGetProfilesResponse` of `proto/tessera/v1/profile.proto`.

use crate::v1;
use prost::bytes::Bytes;

/// `tessera.v1.GetProfileResponse` with `profile` encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetProfileReply {
    /// An encoded `tessera.v1.Profile`.
    #[prost(bytes = "bytes", tag = "1")]
    pub profile: Bytes,
    #[prost(message, optional, tag = "2")]
    pub identifier: Option<v1::Identifier>,
    #[prost(string, tag = "3")]
    pub merged_from: String,
    #[prost(message, optional, tag = "4")]
    pub snapshot: Option<v1::Snapshot>,
}

/// `tessera.v1.ProfileResult` with `profile` encoded (empty: no profile).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProfileResultReply {
    #[prost(message, optional, tag = "1")]
    pub identifier: Option<v1::Identifier>,
    /// An encoded `tessera.v1.Profile`; empty (not sent) when none holds the
    /// identifier.
    #[prost(bytes = "bytes", tag = "2")]
    pub profile: Bytes,
    #[prost(string, tag = "3")]
    pub merged_from: String,
    #[prost(string, tag = "4")]
    pub error: String,
}

/// `tessera.v1.BatchGetProfilesResponse` with each profile encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchGetProfilesReply {
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<ProfileResultReply>,
    #[prost(message, optional, tag = "2")]
    pub snapshot: Option<v1::Snapshot>,
}

include!(concat!(env!("OUT_DIR"), "/tessera.v1.ProfileService.rs"));
