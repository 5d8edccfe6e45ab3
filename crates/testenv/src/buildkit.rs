//! A stand-in for rootless BuildKit's builder image (no BuildKit image can be pulled
//! here): the busybox test image with a `buildctl-daemonless.sh` of its own. What a real
//! BuildKit does with Wharf's arguments is checked by the live Kubernetes suite only.

use crate::ContainerEnv;
use std::sync::OnceLock;

/// The stand-in's tag.
pub const BUILDKIT_STANDIN: &str = "wharf-test/buildkit-standin:1";

/// The stand-in for rootless BuildKit's `buildctl-daemonless.sh`: checks its arguments
/// and environment, prints build-like lines, writes the metadata file with a digest as
/// `buildctl --metadata-file` does. Build args steer it: `SLEEP=N` sleeps before pushing,
/// `FAIL=1` fails as a failed `RUN` does, `NODIGEST=1` writes metadata without a digest.
const BUILDCTL: &str = r##"#!/bin/sh
set -e
fail() { echo "error: stand-in buildctl: $*"; exit 9; }
[ "$BUILDKITD_FLAGS" = "--oci-worker-no-process-sandbox" ] || fail "BUILDKITD_FLAGS is '$BUILDKITD_FLAGS'"
[ "$1" = build ] || fail "not a build: $1"
shift
args=""
while [ $# -gt 0 ]; do
  case "$1" in
    --frontend) shift; frontend=$1 ;;
    --local) shift; case "$1" in context=*) ctx=${1#context=} ;; dockerfile=*) dfdir=${1#dockerfile=} ;; *) fail "local $1" ;; esac ;;
    --opt) shift; case "$1" in filename=*) fname=${1#filename=} ;; build-arg:*) args="$args ${1#build-arg:}" ;; label:*) ;; *) fail "opt $1" ;; esac ;;
    --output) shift; out=$1 ;;
    --metadata-file) shift; meta=$1 ;;
    *) fail "unknown argument $1" ;;
  esac
  shift
done
[ "$frontend" = dockerfile.v0 ] || fail "frontend $frontend"
[ -f "$dfdir/$fname" ] || fail "no Dockerfile $dfdir/$fname"
[ -d "$ctx" ] || fail "no context $ctx"
case "$out" in type=image,name=*,push=true*) ;; *) fail "output $out" ;; esac
echo "#1 [internal] load build definition from $fname"
echo "#1 $(head -n 1 "$dfdir/$fname")"
echo "#2 [internal] load build context: $(ls "$ctx" | tr '\n' ' ')"
echo "#3 build args:$args"
if [ -n "$DOCKER_CONFIG" ]; then
  grep -q '"auths"' "$DOCKER_CONFIG/config.json" || fail "no auths in $DOCKER_CONFIG/config.json"
  echo "#4 registry login from $DOCKER_CONFIG/config.json"
fi
case "$args" in *SLEEP=*) echo "#5 sleeping"; s=${args##*SLEEP=}; sleep "${s%% *}" ;; esac
case "$args" in *FAIL=1*) echo '#6 ERROR: process "/bin/sh -c make" did not complete successfully: exit code: 2'; echo 'error: failed to solve: process "/bin/sh -c make" did not complete successfully: exit code: 2'; exit 1 ;; esac
digest="sha256:$(echo "$out" | sha256sum | cut -c1-64)"
case "$args" in *NODIGEST=1*) echo '{}' > "$meta" ;; *) printf '{\n  "containerimage.config.digest": "sha256:%s",\n  "containerimage.digest": "%s",\n  "image.name": "%s"\n}\n' "$(printf x | sha256sum | cut -c1-64)" "$digest" "${out#type=image,name=}" > "$meta" ;; esac
echo "#7 pushing manifest for ${out#type=image,name=} $digest done"
"##;

/// Builds the stand-in from the busybox test image (once per test process; docker's cache
/// makes it quick in the next) and returns its tag.
pub fn buildkit_standin(env: &ContainerEnv) -> String {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wharf-buildkit-standin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("buildctl-daemonless.sh"), BUILDCTL).map_err(|e| e.to_string())?;
        std::fs::write(
            dir.join("Dockerfile"),
            format!(
                "FROM {}\nCOPY buildctl-daemonless.sh /bin/buildctl-daemonless.sh\n\
                 RUN [\"/bin/sh\", \"-c\", \"chmod 755 /bin/buildctl-daemonless.sh && mkdir -p /tmp && chmod 1777 /tmp\"]\n",
                env.busybox_image
            ),
        )
        .map_err(|e| e.to_string())?;
        let out = std::process::Command::new("docker")
            .args(["build", "-q", "-t", BUILDKIT_STANDIN])
            .arg(&dir)
            .output()
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&dir);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(())
    });
    if let Err(why) = built {
        panic!("cannot build the BuildKit stand-in {BUILDKIT_STANDIN}: {why}");
    }
    BUILDKIT_STANDIN.to_owned()
}
