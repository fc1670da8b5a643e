//! A Delta table at one version as a plain Parquet scan: [`PinnedTable`] resolves the
//! snapshot into exactly its active files (paths, sizes, partition values from the log)
//! and plans a DataFusion `DataSourceExec` over `ParquetSource` with those files — a plan
//! made only of DataFusion's own nodes, which `datafusion-proto` serializes, so that it
//! can be shipped to other processes (delta-rs' own scan cannot be).
//!
//! Invariants:
//! - The files are the snapshot's `add`s, never a listing of the table's folder: files
//!   removed by a commit (a DELETE, an erasure, a compaction) and not yet vacuumed are
//!   never read, and files committed after the version are never seen.
//! - A table with deletion vectors, or with column mapping, is refused with an error
//!   naming the table: the Parquet files alone would show deleted rows or physical
//!   column names. Tessera writes neither.
//! - The schema is the table's, in its own column order, partition columns included.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use deltalake::DeltaTable;
use deltalake::logstore::LogStore;
use object_store::ObjectStore;

use crate::error::{LakeError, Result};

/// One active file of the snapshot.
#[derive(Debug, Clone)]
struct ActiveFile {
    /// Relative to the table's root, decoded.
    path: String,
    size: u64,
    /// In the order of [`PinnedTable::partition_columns`].
    partition_values: Vec<ScalarValue>,
}

/// Table `name` at one version, scanned as plain Parquet over that version's files.
#[derive(Debug, Clone)]
pub struct PinnedTable {
    name: String,
    version: u64,
    /// The table's schema, in its column order.
    schema: SchemaRef,
    /// The data files' columns: the schema without the partition columns.
    file_schema: SchemaRef,
    partition_columns: Vec<FieldRef>,
    files: Vec<ActiveFile>,
    store_url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
}

impl PinnedTable {
    /// Table `name` (opened as `table`) at the version `table` is loaded at.
    pub fn of(name: &str, table: &DeltaTable) -> Result<PinnedTable> {
        let refuse = |message: String| LakeError::Schema {
            table: name.to_owned(),
            message,
        };
        let snapshot = table
            .snapshot()
            .map_err(|e| LakeError::delta(name, "read", e))?;
        let mapping = snapshot
            .metadata()
            .configuration()
            .get("delta.columnMapping.mode")
            .cloned();
        if mapping.as_deref().is_some_and(|m| m != "none") {
            return Err(refuse(format!(
                "column mapping ({}) is not supported by the pinned Parquet scan",
                mapping.unwrap_or_default()
            )));
        }
        // Strings and binaries as views, as delta-rs' provider reads them: the pinned scan
        // is a drop-in replacement, schema included.
        let schema = Arc::new(Schema::new(
            snapshot
                .snapshot()
                .arrow_schema()
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 => {
                        Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View))
                    }
                    DataType::Binary | DataType::LargeBinary => {
                        Arc::new(f.as_ref().clone().with_data_type(DataType::BinaryView))
                    }
                    _ => f.clone(),
                })
                .collect::<Vec<_>>(),
        ));
        let partition_names: Vec<String> = snapshot.metadata().partition_columns().to_vec();
        let mut partition_columns = Vec::with_capacity(partition_names.len());
        for p in &partition_names {
            let field = schema
                .field_with_name(p)
                .map_err(|_| refuse(format!("partition column {p} is not in the schema")))?;
            partition_columns.push(Arc::new(field.clone()));
        }
        let file_schema = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .filter(|f| !partition_names.contains(f.name()))
                .cloned()
                .collect::<Vec<_>>(),
        ));
        let mut files = Vec::new();
        for file in snapshot.log_data().iter() {
            let path = file.path().into_owned();
            if file.deletion_vector_descriptor().is_some() {
                return Err(refuse(format!(
                    "{path} has a deletion vector, which the pinned Parquet scan does not apply"
                )));
            }
            let values = file.partition_values_map();
            let mut partition_values = Vec::with_capacity(partition_columns.len());
            for field in &partition_columns {
                let value = match values.get(field.name()).cloned().flatten() {
                    None => ScalarValue::try_from(field.data_type()),
                    Some(text) => ScalarValue::try_from_string(text, field.data_type()),
                }
                .map_err(|e| {
                    refuse(format!(
                        "{path}: partition value of {}: {}",
                        field.name(),
                        e.strip_backtrace()
                    ))
                })?;
                partition_values.push(value);
            }
            files.push(ActiveFile {
                path,
                size: file.size().max(0) as u64,
                partition_values,
            });
        }
        let log_store = table.log_store();
        Ok(PinnedTable {
            name: name.to_owned(),
            version: snapshot.version(),
            schema,
            file_schema,
            partition_columns,
            files,
            store_url: log_store.object_store_url(),
            store: log_store.object_store(None),
        })
    }

    /// The version the table is pinned at.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How many files a scan reads.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Where the scan finds the files: the URL its plan names, and the store (rooted at
    /// the table) a process running the plan registers under it.
    pub fn store_url(&self) -> &ObjectStoreUrl {
        &self.store_url
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The scan's column of table column `i`: file columns first, then partition columns.
    fn scan_index(&self, i: usize) -> usize {
        let name = self.schema.field(i).name();
        match self.partition_columns.iter().position(|p| p.name() == name) {
            Some(p) => self.file_schema.fields().len() + p,
            None => self.file_schema.index_of(name).unwrap_or(i),
        }
    }
}

#[async_trait]
impl datafusion::catalog::TableProvider for PinnedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // Used to skip row groups and files; the rows are filtered above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        state
            .runtime_env()
            .register_object_store(self.store_url.as_ref(), self.store.clone());
        let table_schema = TableSchema::builder(self.file_schema.clone())
            .with_table_partition_cols(self.partition_columns.clone())
            .build();
        let mut source = ParquetSource::new(table_schema);
        if let Some(predicate) = conjunction(filters.iter().cloned()) {
            let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
            source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
        }
        // Files spread over the session's partitions, largest first onto the least loaded.
        let partitions = state.config().target_partitions().max(1);
        let mut order: Vec<&ActiveFile> = self.files.iter().collect();
        order.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); partitions];
        for f in order {
            if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
                g.0 += f.size;
                g.1.push(
                    PartitionedFile::new(f.path.clone(), f.size)
                        .with_partition_values(f.partition_values.clone()),
                );
            }
        }
        let mut groups: Vec<FileGroup> = groups
            .into_iter()
            .filter(|g| !g.1.is_empty())
            .map(|g| FileGroup::new(g.1))
            .collect();
        // An empty table is one empty partition, not none: operators above a scan (a
        // sort-preserving merge, say) need at least one input partition, and a cluster
        // runs them in a stage of their own.
        if groups.is_empty() {
            groups.push(FileGroup::new(Vec::new()));
        }
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let wanted = projection.unwrap_or(&all);
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(groups)
            .with_projection_indices(Some(wanted.iter().map(|&i| self.scan_index(i)).collect()))?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}
