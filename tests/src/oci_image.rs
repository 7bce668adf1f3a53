//! A one-layer OCI image archive of a root filesystem, for `ctr images import`.
//!
//! Tests that need a container *from an image* (containerd's checkpoint and restore of a
//! container record the image it came from) get one offline: the busybox rootfs as an
//! uncompressed layer, a config, a manifest, and an `index.json` that names the image
//! through containerd's `io.containerd.image.name` annotation, in the OCI image layout
//! (`oci-layout`, `blobs/sha256/<hex>`), tarred. `ctr images import` of every containerd
//! from 1.6 to 2.4 reads it.

use serde_json::json;
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;

/// The annotation with which `ctr images import` names an image of an OCI archive.
const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// An OCI descriptor of a blob written into the layout.
struct Blob {
    digest: String,
    size: u64,
}

/// Writes `bytes` as a blob of the layout at `layout`; returns its descriptor's digest
/// and size.
fn put_blob(layout: &Path, bytes: &[u8]) -> io::Result<Blob> {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(&hex), bytes)?;
    Ok(Blob {
        digest: format!("sha256:{hex}"),
        size: bytes.len() as u64,
    })
}

/// The GOARCH name of the machine (what image configs and containerd's platform
/// matcher use).
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Runs `tar` with `args`; an error carries its stderr.
///
/// GNU tar exits 1 ("some files differ") when a file's ctime changes while it is read:
/// the rootfs's busybox is a hard link that parallel tests link and unlink. Its content
/// does not change, so with that warning off a silent exit 1 counts as success.
fn tar(args: &[&std::ffi::OsStr]) -> io::Result<()> {
    let out = Command::new("tar")
        .arg("--warning=no-file-changed")
        .args(args)
        .output()?;
    if out.status.success() || (out.status.code() == Some(1) && out.stderr.is_empty()) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "tar {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Writes an OCI image archive of `rootfs` named `name` (e.g.
/// `docker.io/tether/busybox:latest`) to `archive`, using `work` (created, then removed)
/// for the layout. The image runs `/bin/sh` with `PATH=/bin` unless told otherwise.
pub fn write_archive(rootfs: &Path, name: &str, work: &Path, archive: &Path) -> io::Result<()> {
    let layout = work.join("layout");
    fs::create_dir_all(&layout)?;
    // The layer: the rootfs as one uncompressed tar, owned by root, in a stable order.
    let layer_tar = work.join("layer.tar");
    tar(&[
        "--numeric-owner".as_ref(),
        "--owner=0".as_ref(),
        "--group=0".as_ref(),
        "--sort=name".as_ref(),
        "-C".as_ref(),
        rootfs.as_os_str(),
        "-cf".as_ref(),
        layer_tar.as_os_str(),
        ".".as_ref(),
    ])?;
    let layer = put_blob(&layout, &fs::read(&layer_tar)?)?;
    fs::remove_file(&layer_tar)?;
    // Uncompressed: the layer's diff id is its digest.
    let config = json!({
        "architecture": oci_architecture(),
        "os": "linux",
        "config": { "Env": ["PATH=/bin"], "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": [layer.digest] },
    });
    let config = put_blob(&layout, config.to_string().as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.digest,
            "size": config.size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer.digest,
            "size": layer.size,
        }],
    });
    let manifest = put_blob(&layout, manifest.to_string().as_bytes())?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest.digest,
            "size": manifest.size,
            "platform": { "architecture": oci_architecture(), "os": "linux" },
            "annotations": { IMAGE_NAME_ANNOTATION: name },
        }],
    });
    fs::write(layout.join("index.json"), index.to_string())?;
    fs::write(
        layout.join("oci-layout"),
        json!({ "imageLayoutVersion": "1.0.0" }).to_string(),
    )?;
    tar(&[
        "-C".as_ref(),
        layout.as_os_str(),
        "-cf".as_ref(),
        archive.as_os_str(),
        ".".as_ref(),
    ])?;
    fs::remove_dir_all(work)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_holds_a_consistent_layout() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let rootfs = tmp.path().join("rootfs");
        fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
        fs::write(rootfs.join("bin/hello"), b"hi\n").expect("file");
        let archive = tmp.path().join("image.tar");
        write_archive(
            &rootfs,
            "example.org/t:1",
            &tmp.path().join("work"),
            &archive,
        )
        .expect("write the archive");
        assert!(!tmp.path().join("work").exists(), "work dir removed");

        let out = tmp.path().join("out");
        fs::create_dir_all(&out).expect("out");
        tar(&[
            "-C".as_ref(),
            out.as_os_str(),
            "-xf".as_ref(),
            archive.as_os_str(),
        ])
        .expect("untar");
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join("index.json")).expect("index.json"))
                .expect("index json");
        let entry = &index["manifests"][0];
        assert_eq!(
            entry["annotations"][IMAGE_NAME_ANNOTATION],
            "example.org/t:1"
        );
        // Every descriptor points at a blob with that digest and size.
        let blob = |desc: &serde_json::Value| -> Vec<u8> {
            let digest = desc["digest"].as_str().expect("digest");
            let bytes = fs::read(out.join("blobs/sha256").join(&digest[7..])).expect("blob");
            assert_eq!(bytes.len() as u64, desc["size"].as_u64().expect("size"));
            let hex: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(&digest[7..], hex);
            bytes
        };
        let manifest: serde_json::Value = serde_json::from_slice(&blob(entry)).expect("manifest");
        let config: serde_json::Value =
            serde_json::from_slice(&blob(&manifest["config"])).expect("config");
        let layer = &manifest["layers"][0];
        blob(layer);
        assert_eq!(config["rootfs"]["diff_ids"][0], layer["digest"]);
        assert_eq!(config["architecture"], oci_architecture());
    }
}
