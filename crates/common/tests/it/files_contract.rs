//! The file port's contract, run against every adapter: the folder here, Azure Blob Storage
//! on Azurite, which the tests install and start themselves.

use bytes::Bytes;
use common::files::{ByteStream, FileError, FileStore, SharedFiles};
use futures::{StreamExt, TryStreamExt, stream};
use std::sync::Arc;

pub(crate) struct FilesSubject {
    pub files: SharedFiles,
    _dir: Option<tempfile::TempDir>,
}

pub(crate) fn folder() -> FilesSubject {
    let dir = tempfile::tempdir().unwrap();
    let files = common::files::folder::FolderFiles::open(dir.path().join("files")).unwrap();
    FilesSubject {
        files: Arc::new(files),
        _dir: Some(dir),
    }
}

/// A fresh container in the process's Azurite, signed in with an account SAS.
pub(crate) async fn blob() -> FilesSubject {
    let azurite = common::testing::azurite::azurite();
    let settings = common::files::blob::BlobSettings {
        endpoint: azurite.endpoint.clone(),
        container: format!("contract-{}", uuid::Uuid::new_v4().simple()),
        credential: common::files::blob::BlobCredentialKind::Sas,
        sas: Some(common::testing::azurite::account_sas().into()),
    };
    let files = common::files::blob::BlobFiles::connect(&settings)
        .await
        .unwrap();
    FilesSubject {
        files: Arc::new(files),
        _dir: None,
    }
}

fn chunks(parts: &[&'static [u8]]) -> ByteStream {
    let parts: Vec<_> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
    stream::iter(parts).boxed()
}

async fn read_all(files: &dyn FileStore, name: &str, offset: u64) -> Vec<u8> {
    let parts: Vec<Bytes> = files
        .read_from(name, offset)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    parts.concat()
}

macro_rules! files_contract {
    ($($name:ident),+ $(,)?) => {
        mod folder_adapter {
            $(#[tokio::test] async fn $name() { super::$name(super::folder().files.as_ref()).await; })+
        }
        mod blob_adapter {
            $(#[tokio::test] async fn $name() { super::$name(super::blob().await.files.as_ref()).await; })+
        }
    };
}

files_contract!(
    written_in_pieces_read_whole_or_from_an_offset,
    a_file_is_replaced_whole,
    listing_by_prefix_in_name_order,
    rename_and_delete,
    a_failed_write_leaves_nothing,
    names_that_leave_the_store_are_refused,
    a_large_file_streams_through,
);

async fn written_in_pieces_read_whole_or_from_an_offset(files: &dyn FileStore) {
    let size = files
        .put(
            "in/a.csv",
            chunks(&[b"sku,name\n", b"A-1,one\n", b"A-2,two\n"]),
        )
        .await
        .unwrap();
    assert_eq!(size, 25);
    assert_eq!(
        read_all(files, "in/a.csv", 0).await,
        b"sku,name\nA-1,one\nA-2,two\n"
    );
    assert_eq!(read_all(files, "in/a.csv", 17).await, b"A-2,two\n");
    assert_eq!(read_all(files, "in/a.csv", 25).await, b"");
    let info = files.info("in/a.csv").await.unwrap().unwrap();
    assert_eq!((info.name.as_str(), info.size), ("in/a.csv", 25));
    assert!(files.info("in/missing.csv").await.unwrap().is_none());
    assert!(matches!(
        files.read_from("in/missing.csv", 0).await.err(),
        Some(FileError::NotFound(_))
    ));
}

async fn a_file_is_replaced_whole(files: &dyn FileStore) {
    files.put("b.csv", chunks(&[b"old content"])).await.unwrap();
    files.put("b.csv", chunks(&[b"new"])).await.unwrap();
    assert_eq!(read_all(files, "b.csv", 0).await, b"new");
}

async fn listing_by_prefix_in_name_order(files: &dyn FileStore) {
    for name in [
        "incoming/b.csv",
        "incoming/a.csv",
        "incoming/sub/c.csv",
        "uploads/x",
        "incomingx",
    ] {
        files.put(name, chunks(&[b"1"])).await.unwrap();
    }
    let names: Vec<String> = files
        .list("incoming/")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(
        names,
        ["incoming/a.csv", "incoming/b.csv", "incoming/sub/c.csv"]
    );
    assert_eq!(files.list("nothing/").await.unwrap(), []);
}

async fn rename_and_delete(files: &dyn FileStore) {
    files
        .put("incoming/f.csv", chunks(&[b"data"]))
        .await
        .unwrap();
    files.rename("incoming/f.csv", "uploads/1").await.unwrap();
    assert!(files.info("incoming/f.csv").await.unwrap().is_none());
    assert_eq!(read_all(files, "uploads/1", 0).await, b"data");
    assert!(matches!(
        files.rename("incoming/f.csv", "uploads/2").await,
        Err(FileError::NotFound(_))
    ));
    files.delete("uploads/1").await.unwrap();
    files.delete("uploads/1").await.unwrap();
    assert!(files.info("uploads/1").await.unwrap().is_none());
}

async fn a_failed_write_leaves_nothing(files: &dyn FileStore) {
    let failing: ByteStream = stream::iter(vec![
        Ok(Bytes::from_static(b"half")),
        Err(FileError::Source("the client went away".into())),
    ])
    .boxed();
    assert!(files.put("half/f.csv", failing).await.is_err());
    assert!(files.info("half/f.csv").await.unwrap().is_none());
    assert_eq!(files.list("half/").await.unwrap(), []);
}

async fn names_that_leave_the_store_are_refused(files: &dyn FileStore) {
    for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
        assert!(matches!(
            files.put(bad, chunks(&[b"x"])).await,
            Err(FileError::InvalidName(..))
        ));
        assert!(matches!(
            files.read_from(bad, 0).await.err(),
            Some(FileError::InvalidName(..))
        ));
    }
}

async fn a_large_file_streams_through(files: &dyn FileStore) {
    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    let content: ByteStream = stream::iter((0..40).map(move |_| Ok(chunk.clone()))).boxed();
    assert_eq!(files.put("big", content).await.unwrap(), 40 * 256 * 1024);
    let mut total = 0usize;
    let mut reader = files.read_from("big", 1024).await.unwrap();
    while let Some(part) = reader.next().await {
        total += part.unwrap().len();
    }
    assert_eq!(total, 40 * 256 * 1024 - 1024);
}
