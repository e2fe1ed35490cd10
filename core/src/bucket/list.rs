//! Listings: [`Bucket::list`], [`Bucket::list_folders`] (one level deep, a
//! delimiter listing on object stores) and [`Bucket::list_pruned`], the latter as concurrent
//! range listings on object stores (right in both orders stores list in) and as a
//! pruned walk of the folders on `file://` (`local.rs`).

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as OsPath;

use super::local::{read_local_dir, walk_local};
use super::{Bucket, BucketError, ObjectInfo, Op, Visit};
use crate::layout::{Key, KeyPrefix};

impl Bucket {
    /// Lists every object under `prefix`.
    pub async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectInfo>, BucketError> {
        let p = self.path(prefix.as_str().trim_end_matches('/'));
        self.collect(self.store.list(Some(&p)), prefix.as_str())
            .await
    }

    /// Every entry of a listing stream of `prefix`.
    async fn collect(
        &self,
        mut s: BoxStream<'static, object_store::Result<object_store::ObjectMeta>>,
        prefix: &str,
    ) -> Result<Vec<ObjectInfo>, BucketError> {
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(meta) => out.push(self.info(meta)),
                // A missing directory on file:// is an empty listing.
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(self.err(Op::List, prefix, e)),
            }
        }
        Ok(out)
    }

    /// Lists `prefix` one level deep: the folders directly below it (as keys relative
    /// to the root ending in `/`, `status/web-1/`) and the objects directly in it,
    /// each list sorted. On object stores this is a delimiter listing
    /// (`ListObjectsV2` with `delimiter=/`): one entry per folder whatever the folder
    /// holds, so it costs a page per 1,000 folders where a full listing costs a page
    /// per 1,000 objects. On `file://` one `readdir`.
    pub async fn list_folders(
        &self,
        prefix: &KeyPrefix,
    ) -> Result<(Vec<String>, Vec<ObjectInfo>), BucketError> {
        if let Some(root) = &self.local_root {
            let (root, prefix, url) = (
                root.clone(),
                prefix.as_str().to_owned(),
                self.url_text.clone(),
            );
            return tokio::task::spawn_blocking(move || {
                let (mut objects, mut folders) = (Vec::new(), Vec::new());
                read_local_dir(
                    &root,
                    &prefix,
                    &|_| Visit::All,
                    &url,
                    &mut objects,
                    &mut folders,
                )?;
                folders.sort_unstable();
                objects.sort_unstable_by(|a: &ObjectInfo, b| a.key.cmp(&b.key));
                Ok((folders, objects))
            })
            .await
            .expect("local list task does not panic");
        }
        let p = self.path(prefix.as_str().trim_end_matches('/'));
        let res = self
            .store
            .list_with_delimiter(Some(&p))
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(object_store::ListResult {
                    common_prefixes: vec![],
                    objects: vec![],
                    extensions: Default::default(),
                }),
                e => Err(e),
            })
            .map_err(|e| self.err(Op::List, prefix.as_str(), e))?;
        let mut folders: Vec<String> = res
            .common_prefixes
            .iter()
            .map(|p| format!("{}/", self.rel(p)))
            .collect();
        folders.sort_unstable();
        let mut objects: Vec<ObjectInfo> = res.objects.into_iter().map(|m| self.info(m)).collect();
        objects.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok((folders, objects))
    }

    /// Lists every object under `folder`, a folder key [`Bucket::list_folders`]
    /// returned (ending in `/`), whatever its name. On `file://` this is the walk of
    /// [`Bucket::list_pruned`], which follows no symbolic link to a folder and reads
    /// any file name (one that is not UTF-8 lossily), so what a bucket writer leaves
    /// in a folder cannot make it fail or wander off (`object_store`'s own local
    /// listing follows links, and fails on a loop or on such a name).
    pub async fn list_folder(&self, folder: &str) -> Result<Vec<ObjectInfo>, BucketError> {
        let mut out = match &self.local_root {
            Some(root) => Self::walk(root, folder, |_| Visit::All, &self.url_text).await?,
            None => {
                let p = self.path(folder.trim_end_matches('/'));
                self.collect(self.store.list(Some(&p)), folder).await?
            }
        };
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Lists the objects under `prefix` whose keys sort after `after` (S3's
    /// `start-after`): the end of a folder of ordered keys without reading its start.
    /// On `file://` the folder is listed whole and filtered.
    pub async fn list_after(
        &self,
        prefix: &KeyPrefix,
        after: &Key,
    ) -> Result<Vec<ObjectInfo>, BucketError> {
        if self.local_root.is_some() {
            let mut all = self.list(prefix).await?;
            all.retain(|o| o.key.as_str() > after.as_str());
            return Ok(all);
        }
        let p = self.path(prefix.as_str().trim_end_matches('/'));
        let mut s = self
            .store
            .list_with_offset(Some(&p), &self.path(after.as_str()));
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(meta) => out.push(self.info(meta)),
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(self.err(Op::List, prefix.as_str(), e)),
            }
        }
        Ok(out)
    }

    /// Lists the objects under `prefix` that `visit` keeps, in no particular order.
    ///
    /// `visit` is asked about each folder strictly below `prefix`, as a key relative
    /// to the root ending in `/` (`status/web-1/`), outermost first, and answers with
    /// a [`Visit`]: an object is listed when every folder it is in answers
    /// [`Visit::All`], or when the first one that does not answers
    /// [`Visit::Only`] with one of its names (directly in that folder). What that buys depends
    /// on the store:
    ///
    /// - `file://`: skipped folders are never read, an `Only` folder costs one `stat`
    ///   per name (no `readdir`), and `All` folders are walked by several threads (one `readdir`
    ///   per folder and one `stat` per object, against about three path-resolving
    ///   `stat`s per object in `object_store`'s walker).
    ///   Files get the same ETag as from [`Bucket::get`], [`Bucket::head`] and
    ///   [`Bucket::list`]; a symbolic link to a file is listed as that file, a
    ///   symbolic link to a folder is not followed (so a link loop cannot hang it);
    /// - object stores: the server lists everything, so `split_after` cuts the key
    ///   space after each of these keys (relative to the root) into ranges that are
    ///   listed concurrently with `ListObjectsV2`'s `start-after`, each range stopping
    ///   at its first key past its end (S3 lists in key order). Objects `visit` does
    ///   not keep are dropped as the pages arrive, so they are never held. Give split keys that cut
    ///   the expected keys into similar shares; none lists one range, as
    ///   [`Bucket::list`] does. A split key must not name a folder (`status/web-1`
    ///   while `status/web-1/…` exists): SeaweedFS's `start-after` then skips that
    ///   whole folder. End it in a character no name there has, such as
    ///   `status/web-1/~`.
    pub async fn list_pruned<F>(
        &self,
        prefix: &KeyPrefix,
        visit: F,
        split_after: &[String],
    ) -> Result<Vec<ObjectInfo>, BucketError>
    where
        F: Fn(&str) -> Visit + Send + Sync + 'static,
    {
        Ok(match &self.local_root {
            Some(root) => Self::walk(root, prefix.as_str(), visit, &self.url_text).await?,
            None => self.list_ranges(prefix, &visit, split_after).await?,
        })
    }

    /// The `file://` walk of [`Bucket::list_pruned`] and [`Bucket::list_folder`]
    /// (`walk_local`) under the folder key `prefix` of the bucket at `root`, on a
    /// blocking thread.
    async fn walk<F>(
        root: &std::path::Path,
        prefix: &str,
        visit: F,
        url: &str,
    ) -> Result<Vec<ObjectInfo>, BucketError>
    where
        F: Fn(&str) -> Visit + Send + Sync + 'static,
    {
        let (root, prefix, url) = (root.to_owned(), prefix.to_owned(), url.to_owned());
        tokio::task::spawn_blocking(move || walk_local(&root, &prefix, &visit, &url))
            .await
            .expect("local list task does not panic")
    }

    async fn list_ranges(
        &self,
        prefix: &KeyPrefix,
        visit: &(dyn Fn(&str) -> Visit + Send + Sync),
        split_after: &[String],
    ) -> Result<Vec<ObjectInfo>, BucketError> {
        let p = self.path(prefix.as_str().trim_end_matches('/'));
        // Bounds are compared as the store compares them: full paths, as sent.
        let mut bounds: Vec<OsPath> = split_after
            .iter()
            .map(|s| self.path(s))
            .filter(|b| b.as_ref().starts_with(p.as_ref()))
            .collect();
        bounds.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        bounds.dedup();
        let ranges: Vec<(Option<&OsPath>, Option<&OsPath>)> = (0..=bounds.len())
            .map(|i| (i.checked_sub(1).map(|j| &bounds[j]), bounds.get(i)))
            .collect();
        let rel_prefix = prefix.as_str();
        let lists = ranges.into_iter().map(|(after, upto)| {
            let p = &p;
            async move {
                let mut s = match after {
                    None => self.store.list(Some(p)),
                    Some(a) => self.store.list_with_offset(Some(p), a),
                };
                let mut out = Vec::new();
                let (after, upto) = (after.map(OsPath::as_ref), upto.map(OsPath::as_ref));
                while let Some(item) = s.next().await {
                    match item {
                        Ok(meta) => {
                            let at = meta.location.as_ref();
                            if upto.is_some_and(|u| range_passed(at, u)) {
                                break;
                            }
                            if !in_range(at, after, upto) {
                                continue;
                            }
                            let info = self.info(meta);
                            if kept(&info.key, rel_prefix, visit) {
                                out.push(info);
                            }
                        }
                        Err(object_store::Error::NotFound { .. }) => break,
                        Err(e) => return Err(self.err(Op::List, rel_prefix, e)),
                    }
                }
                Ok(out)
            }
        });
        let parts = futures::future::try_join_all(lists).await?;
        // A key in the byte range of one cut and the folder range of another is
        // listed by both.
        let mut all: Vec<ObjectInfo> = parts.into_iter().flatten().collect();
        all.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        all.dedup_by(|a, b| a.key == b.key);
        Ok(all)
    }
}

/// Stores list in one of two orders: S3 proper (AWS, MinIO, moto) by the key's bytes,
/// SeaweedFS folder by folder (`a/x` before `a-b/x`, though `-` sorts before `/`),
/// and `start-after` follows the same order. A range listing must be right in both:
/// it keeps a key inside its range in either order, and stops only at a key past its
/// end in both.
pub(super) fn range_passed(key: &str, upto: &str) -> bool {
    key > upto && folder_order(key, upto).is_gt()
}

/// Whether `key` lies in `(after, upto]` by bytes or by folders (see [`range_passed`]).
pub(super) fn in_range(key: &str, after: Option<&str>, upto: Option<&str>) -> bool {
    let by_bytes = after.is_none_or(|a| key > a) && upto.is_none_or(|u| key <= u);
    let by_folders = after.is_none_or(|a| folder_order(key, a).is_gt())
        && upto.is_none_or(|u| folder_order(key, u).is_le());
    by_bytes || by_folders
}

/// Compares keys folder by folder, as a store that walks folders lists them.
fn folder_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Whether [`Bucket::list_pruned`] keeps `key`, by what `visit` answers for the
/// folders it is in below `prefix`.
pub(super) fn kept(key: &str, prefix: &str, visit: &(dyn Fn(&str) -> Visit + Send + Sync)) -> bool {
    let Some(rest) = key.strip_prefix(prefix) else {
        return true;
    };
    let start = prefix.len();
    for (i, _) in rest.match_indices('/') {
        let end = start + i + 1;
        match visit(&key[..end]) {
            Visit::All => {}
            Visit::Skip => return false,
            Visit::Only(names) => return names.contains(&&key[end..]),
        }
    }
    true
}
