//! One channel to the server, shared by every article in flight (tonic multiplexes the calls
//! over one HTTP/2 connection and reconnects when it drops), plus the API key on every call.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use super::ClientError;
use crate::config::ClientArgs;
use crate::proto::translation_service_client::TranslationServiceClient;

pub type Client = TranslationServiceClient<InterceptedService<Channel, ApiKey>>;

/// Adds `authorization: Bearer <key>` to every call when a key is set.
#[derive(Clone)]
pub struct ApiKey(Option<MetadataValue<Ascii>>);

impl ApiKey {
    pub fn new(key: Option<&str>) -> Result<Self, ClientError> {
        let Some(key) = key else {
            return Ok(Self(None));
        };
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", key.trim())
            .parse()
            .map_err(|_| ClientError::ApiKey)?;
        // Keeps the key out of debug output of the request.
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Connects now, so that a wrong address fails the run at once with one clear error rather
/// than every article after its retries.
pub async fn connect(args: &ClientArgs) -> Result<Client, ClientError> {
    let endpoint = endpoint(args).await?;
    let channel = endpoint.connect().await.map_err(|e| ClientError::Connect {
        addr: args.addr.clone(),
        message: error_chain(&e),
    })?;
    let auth = ApiKey::new(args.api_key.as_deref())?;
    Ok(TranslationServiceClient::with_interceptor(channel, auth))
}

async fn endpoint(args: &ClientArgs) -> Result<Endpoint, ClientError> {
    // A bare host:port is taken as plaintext, like grpcurl's -plaintext.
    let addr = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let bad_addr = |message: String| ClientError::Address {
        addr: args.addr.clone(),
        message,
    };
    let endpoint = Endpoint::from_shared(addr.clone())
        .map_err(|e| bad_addr(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        // Notices a dead connection during long articles instead of waiting for the deadline.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    if addr.starts_with("https://") {
        let tls = tls_config(args).await?;
        return endpoint
            .tls_config(tls)
            .map_err(|e| bad_addr(error_chain(&e)));
    }
    if !addr.starts_with("http://") {
        return Err(bad_addr("the scheme must be http:// or https://".into()));
    }
    if args.tls_ca.is_some() || args.tls_domain.is_some() {
        return Err(bad_addr(
            "--tls-ca and --tls-domain need an https:// address".into(),
        ));
    }
    Ok(endpoint)
}

async fn tls_config(args: &ClientArgs) -> Result<ClientTlsConfig, ClientError> {
    let mut tls = ClientTlsConfig::new();
    tls = match &args.tls_ca {
        Some(path) => {
            let pem = tokio::fs::read(path)
                .await
                .map_err(|source| ClientError::TlsCa {
                    path: path.clone(),
                    source,
                })?;
            tls.ca_certificate(Certificate::from_pem(pem))
        }
        None => tls.with_native_roots(),
    };
    if let Some(domain) = &args.tls_domain {
        tls = tls.domain_name(domain.clone());
    }
    Ok(tls)
}

/// tonic's transport errors say little at the top ("transport error"); the cause is below.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
