//! Object stores for `s3://`, `gs://` and `az://` lakes, built with `object_store`'s own
//! builders from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`) plus the lake's
//! `storage_options`, and registered with Delta Lake once per process.

use std::sync::{Arc, Once};

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError, Path};
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use url::Url;

const SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl"];

/// Registers the cloud schemes with Delta Lake (idempotent).
pub(crate) fn register_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let stores = object_store_factories();
        let logs = logstore_factories();
        for scheme in SCHEMES {
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                stores.insert(url.clone(), Arc::new(CloudStores));
                logs.insert(url, Arc::new(CloudLogs));
            }
        }
    });
}

struct CloudStores;

fn store_error(url: &Url, e: object_store::Error) -> DeltaTableError {
    DeltaTableError::InvalidTableLocation(format!("{url}: {e}"))
}

/// Builds the object store for a cloud URL from the environment and `options`. Options
/// the store does not know are ignored (Delta Lake passes its own options through too).
pub fn build_store(
    url: &Url,
    options: &std::collections::HashMap<String, String>,
) -> DeltaResult<Arc<dyn ObjectStore>> {
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env().with_url(url.as_str());
            for (k, v) in options {
                if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    b = b.with_config(key, v);
                }
            }
            Arc::new(b.build().map_err(|e| store_error(url, e))?)
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                if let Ok(key) = k.to_ascii_lowercase().parse::<GoogleConfigKey>() {
                    b = b.with_config(key, v);
                }
            }
            Arc::new(b.build().map_err(|e| store_error(url, e))?)
        }
        _ => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                if let Ok(key) = k.to_ascii_lowercase().parse::<AzureConfigKey>() {
                    b = b.with_config(key, v);
                }
            }
            Arc::new(b.build().map_err(|e| store_error(url, e))?)
        }
    };
    Ok(store)
}

impl ObjectStoreFactory for CloudStores {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let store = build_store(url, &config.raw)?;
        let path = Path::from_url_path(url.path())
            .map_err(|e| DeltaTableError::InvalidTableLocation(format!("{url}: {e}")))?;
        Ok((store, path))
    }
}

struct CloudLogs;

impl LogStoreFactory for CloudLogs {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}
