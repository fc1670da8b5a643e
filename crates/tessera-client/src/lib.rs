//! A Rust client of the `tessera.v1` gRPC API of `tessera serve`: sign in once, then
//! look profiles up and read audiences over one HTTP/2 connection (or several, sharing
//! the token).
//!
//! ```no_run
//! # async fn demo() -> Result<(), tessera_client::ClientError> {
//! let connection = tessera_client::connect("http://127.0.0.1:50051").await?;
//! let mut client = tessera_client::Client::login(connection, "ana", "a-long-passphrase").await?;
//! let found = client.get_profile("email", "Jane@Example.com").await?;
//! println!("{:?}", found.profile.map(|p| p.profile_id));
//! # Ok(()) }
//! ```
//!
//! With the generated clients of [`v1`] (`v1::profile_service_client`, ...), any
//! call of the contract is available; [`Client`] covers the common ones.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// The generated messages and clients of `proto/tessera/v1/`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("tessera.v1");
}

pub use prost::Message;
pub use v1::auth_service_client;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not a URL such as `http://127.0.0.1:50051`.
    #[error("{0:?} is not a server address such as http://127.0.0.1:50051")]
    Address(String),
    /// The connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The server answered with an error.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The server's token cannot be sent as a header.
    #[error("the sign-in token is not a header value")]
    Token,
}

/// One HTTP/2 connection (`TCP_NODELAY` on), to share between clients.
pub async fn connect(address: &str) -> Result<Channel, ClientError> {
    Ok(Endpoint::from_shared(address.to_owned())
        .map_err(|_| ClientError::Address(address.to_owned()))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// A signed-in caller of `tessera.v1`.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    bearer: MetadataValue<Ascii>,
}

impl Client {
    /// Signs in with a user's password (`AuthService.Login`).
    pub async fn login(
        channel: Channel,
        user: &str,
        password: &str,
    ) -> Result<Client, ClientError> {
        let token = v1::auth_service_client::AuthServiceClient::new(channel.clone())
            .login(v1::LoginRequest {
                user: user.to_owned(),
                password: password.to_owned(),
            })
            .await?
            .into_inner()
            .token;
        Client::with_token(channel, &token)
    }

    /// A client with a token already in hand (an API token of `tessera token add`).
    pub fn with_token(channel: Channel, token: &str) -> Result<Client, ClientError> {
        Ok(Client {
            channel,
            bearer: format!("Bearer {token}")
                .parse()
                .map_err(|_| ClientError::Token)?,
        })
    }

    /// The same caller over another connection.
    pub fn on(&self, channel: Channel) -> Client {
        Client {
            channel,
            bearer: self.bearer.clone(),
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.bearer.clone());
        request
    }

    /// The profile holding identifier `id_type:value` (`ProfileService.GetProfile`).
    pub async fn get_profile(
        &mut self,
        id_type: &str,
        value: &str,
    ) -> Result<v1::GetProfileResponse, ClientError> {
        let request = self.request(v1::GetProfileRequest {
            identifier: Some(v1::Identifier {
                r#type: id_type.to_owned(),
                value: value.to_owned(),
            }),
        });
        Ok(
            v1::profile_service_client::ProfileServiceClient::new(self.channel.clone())
                .get_profile(request)
                .await?
                .into_inner(),
        )
    }

    /// The segments with their sizes (`AudienceService.ListSegments`).
    pub async fn list_segments(&mut self) -> Result<v1::ListSegmentsResponse, ClientError> {
        let request = self.request(v1::ListSegmentsRequest {});
        Ok(
            v1::audience_service_client::AudienceServiceClient::new(self.channel.clone())
                .list_segments(request)
                .await?
                .into_inner(),
        )
    }
}
