//! The running service's state: the database and the chroma-like store behind one lock,
//! used from blocking tasks so SQLite never stalls the async runtime.

use std::sync::{Arc, Mutex};

use crate::chroma::ChromaFiles;
use crate::config::Config;
use crate::error::StandinError;
use crate::store::{Counts, Interaction, Memory, NewMemory, Store};

/// Shared handle to the stand-in's data; cheap to clone.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    data: Mutex<Option<Data>>,
}

#[derive(Debug)]
struct Data {
    store: Store,
    chroma: ChromaFiles,
}

impl Service {
    /// Opens the database and the chroma-like store at the configured paths.
    pub fn open(config: Config) -> Result<Self, StandinError> {
        let store = Store::open(&config.db_path)?;
        let chroma = ChromaFiles::open(&config.chroma_path)?;
        tracing::info!(
            db = %config.db_path.display(),
            chroma = %config.chroma_path.display(),
            registry = %config.registry_path.display(),
            build_sha = %config.build_sha,
            "atocore-standin opened its storage"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                data: Mutex::new(Some(Data { store, chroma })),
            }),
        })
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    async fn with<T, F>(&self, f: F) -> Result<T, StandinError>
    where
        T: Send + 'static,
        F: FnOnce(&Data) -> Result<T, StandinError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let guard = inner
                .data
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match guard.as_ref() {
                Some(data) => f(data),
                None => Err(StandinError::Task(
                    "the stand-in is shutting down".to_owned(),
                )),
            }
        })
        .await
        .map_err(|e| StandinError::Task(e.to_string()))?
    }

    /// Stores a memory (and its pseudo-embedding); `true` when it is new.
    pub async fn add_memory(&self, new: NewMemory) -> Result<(Memory, bool), StandinError> {
        self.with(move |d| {
            let (memory, created) = d.store.add_memory(&new)?;
            if created {
                d.chroma.add(&memory.id, &memory.content)?;
            }
            Ok((memory, created))
        })
        .await
    }

    /// Memories of one project, or all.
    pub async fn memories(&self, project: Option<String>) -> Result<Vec<Memory>, StandinError> {
        self.with(move |d| d.store.memories(project.as_deref()))
            .await
    }

    /// Stores a captured turn.
    pub async fn add_interaction(&self, turn: Interaction) -> Result<String, StandinError> {
        self.with(move |d| d.store.add_interaction(&turn)).await
    }

    /// Row counts of the database and the number of embeddings.
    pub async fn counts(&self) -> Result<(Counts, i64), StandinError> {
        self.with(|d| Ok((d.store.counts()?, d.chroma.count()?)))
            .await
    }

    /// One background heartbeat write.
    pub async fn beat(&self) -> Result<(), StandinError> {
        self.with(|d| d.store.beat()).await
    }

    /// Closes the database cleanly; later calls fail with "shutting down".
    pub fn close(&self) -> Result<(), StandinError> {
        let data = self
            .inner
            .data
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match data {
            Some(Data { store, chroma }) => {
                drop(chroma);
                store.close()
            }
            None => Ok(()),
        }
    }
}
