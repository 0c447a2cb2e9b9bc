"""Constants shared across package boundaries: file keys, sizes, topics, environment names.

Everything a trainer, an exporter and a device must agree on lives here, once.
"""

# --- the plant -------------------------------------------------------------
OBS_DIM = (
    4  # CartPole state: cart position (m), cart velocity (m/s), pole angle (rad), tip velocity
)
ENV_ID = "CartPole-v1"
# What a plant takes as its action (runtime/spaces.py): one of n discrete actions (an int in
# 0..n-1) or a vector of k floats within bounds
ACTION_DISCRETE, ACTION_CONTINUOUS = "discrete", "continuous"
ACTION_KINDS = (ACTION_DISCRETE, ACTION_CONTINUOUS)
CARTPOLE_ACTIONS = 2  # push left (0), push right (1)

# --- policy.npz ------------------------------------------------------------
FORMAT_NAME = "reinforce-edge/policy"
FORMAT_VERSION = 1
KEY_W1 = "W1"  # float32 (hidden, OBS_DIM): observation -> hidden
KEY_W2 = "W2"  # float32 (hidden,): hidden -> logit of p(action 1)
KEY_META = "meta"  # 0-d unicode array holding UTF-8 JSON
KEY_SIGNATURE = "signature"  # optional uint8 (64,): Ed25519 over signed_bytes()
REQUIRED_KEYS = frozenset({KEY_W1, KEY_W2, KEY_META})
ALLOWED_KEYS = REQUIRED_KEYS | {KEY_SIGNATURE}
META_FIELDS = (  # every one required; train_seed and eval_mean_return may be null
    "format",
    "format_version",
    "version",
    "hidden",
    "obs_dim",
    "env_id",
    "created",
    "train_seed",
    "episodes",
    "eval_mean_return",
)
MAX_HIDDEN = 4096  # a larger layer is not a controller for a small board
# Format 2 (runtime/policy.py): the same zip of .npy entries, one hidden layer, optional biases
# and observation normaliser, and a head in meta. FORMAT_VERSION (1) is what make_meta writes
# without a spec, so every CartPole policy stays the format-1 file devices already read.
FORMAT_VERSION_2 = 2
FORMAT_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_2)
KEY_B1 = "b1"  # float32 (hidden,): hidden-layer bias
KEY_B2 = "b2"  # float32 (action_dim,): output bias ((1,) for a bernoulli head)
KEY_OBS_MEAN = "obs_mean"  # float32 (obs_dim,): normaliser mean, with obs_std or not at all
KEY_OBS_STD = "obs_std"  # float32 (obs_dim,), every value > 0
KEY_LOG_STD = "log_std"  # float32 (action_dim,): gaussian head only, and required there
# The order the v2 signature covers the arrays in (those present), and their order in the zip
ARRAY_KEYS_V2 = (KEY_W1, KEY_W2, KEY_B1, KEY_B2, KEY_OBS_MEAN, KEY_OBS_STD, KEY_LOG_STD)
ALLOWED_KEYS_V2 = ALLOWED_KEYS | set(ARRAY_KEYS_V2)
META_FIELDS_V2 = (  # every one required; train_seed and eval_mean_return may be null
    "format",
    "format_version",
    "version",
    "hidden",
    "obs_dim",
    "activation",
    "head",
    "action_dim",
    "env_id",
    "created",
    "train_seed",
    "episodes",
    "eval_mean_return",
)
META_BOUNDS_V2 = ("action_low", "action_high")  # lists of action_dim floats: gaussian only
META_OPTIONAL_V2 = ("solved_episode", "target_return")  # the trainer's; integer / number or null
ACTIVATIONS = ("relu", "tanh")
HEAD_BERNOULLI, HEAD_CATEGORICAL, HEAD_GAUSSIAN = "bernoulli", "categorical", "gaussian"
HEADS = (HEAD_BERNOULLI, HEAD_CATEGORICAL, HEAD_GAUSSIAN)
MAX_OBS_DIM = 1024  # observation size: far beyond a board's sensors (LunarLander has 8)
MAX_ACTION_DIM = 256  # categorical actions n, or gaussian action size k
OBS_CLIP = 10.0  # normalised observations are clipped to +-this (SB3 VecNormalize's clip_obs)
MAX_META_BYTES = 64 * 1024  # meta JSON, in bytes (UTF-8)
MAX_KEY_FILE_BYTES = 64 * 1024  # an Ed25519 PEM key is ~120 bytes; room for comments
DEFAULT_MAX_POLICY_BYTES = 1024 * 1024  # 1 MiB: limit for a file or an MQTT payload
SIGNATURE_DOMAIN = b"reinforce-edge/policy-signature/v1\x00"
SIGNATURE_DOMAIN_V2 = b"reinforce-edge/policy-signature/v2\x00"  # format 2: never a v1 match
SIGNATURE_BYTES = 64  # Ed25519
POLICY_FILE = "policy.npz"
ONNX_FILE = "policy.onnx"
# policy.onnx's interface (docs/export.md): input obs (N, obs_dim); format 1's one output
# prob; format 2's outputs action, the greedy action, then its head's distribution
ONNX_INPUT = "obs"
ONNX_PROB_OUTPUT = "prob"  # p(action 1): format 1's one output, format 2 bernoulli's second
ONNX_ACTION_OUTPUT = "action"
ONNX_DISTRIBUTION_OUTPUTS = {
    HEAD_BERNOULLI: ONNX_PROB_OUTPUT,
    HEAD_CATEGORICAL: "probs",
    HEAD_GAUSSIAN: "mean",
}
C_HEADER_FILE = "policy.h"
MANIFEST_FILE = "manifest.json"

# --- MQTT topics (P = topic prefix, ID = device id) ---------------------------
DEFAULT_TOPIC_PREFIX = "reinforce-edge"
TOPIC_DEVICE_POLICY = "{prefix}/devices/{device_id}/policy"
TOPIC_FLEET_POLICY = "{prefix}/fleet/policy"
TOPIC_STATUS = "{prefix}/devices/{device_id}/status"
TOPIC_TELEMETRY = "{prefix}/devices/{device_id}/telemetry"
TOPIC_ALL_STATUS = "{prefix}/devices/+/status"
TOPIC_DEVICE_KEYS = "{prefix}/devices/{device_id}/keys"  # signed key-set changes (docs/ota.md)
TOPIC_FLEET_KEYS = "{prefix}/fleet/keys"

# --- control loop (issue 4) ------------------------------------------------------
# Wake this long before each deadline, run one throwaway decision and spin to the deadline:
# after a 10 ms sleep the caches are cold and time.sleep overshoots by 0.1-0.2 ms (measured at
# 100 Hz on the bench VM: decision p50 41-67 -> 6-10 us, lateness p50 140-200 -> 13-35 us;
# docs/performance.md). Costs this much CPU per period (1.5% at 50 Hz).
DEFAULT_WARM_UP_US = 300.0
MAX_WARM_UP_US = 100_000.0


# --- exit codes of every command line (python -m trainer, export, runtime) ----------------
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130  # 2: bad usage or input

# --- environment variables ---------------------------------------------------
ENV_PREFIX = "REINFORCE_EDGE_"
ENV_MQTT_PASSWORD = "REINFORCE_EDGE_MQTT_PASSWORD"

# --- MQTT agent, OTA updates and device state (issue 5) ------------------------
MQTT_KEEPALIVE_S = 30  # broker drops the session (and sends the will) after 1.5x this
DEFAULT_TELEMETRY_INTERVAL_S = 5.0
# A device id is one topic level and a prefix is levels of the same characters: no wildcards,
# and no '.', which NATS's MQTT gateway maps to its subject separator (it refuses a subscription
# to a topic holding one and disconnects a client publishing to one: docs/deploying.md)
DEVICE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_:-]{0,63}"
TOPIC_PREFIX_PATTERN = r"[A-Za-z0-9_:-]+(/[A-Za-z0-9_:-]+)*"
DEVICE_ID_RULE = (
    "1-64 letters, digits, _ : - starting with a letter or digit (no '.', / + # or spaces)"
)
TOPIC_PREFIX_RULE = "levels of letters, digits, _ : - separated by / (no '.' or wildcards)"
# A broker may refuse a subscription for a while: NATS's MQTT gateway answers SUBACK 0x80 until
# JetStream has settled after a node joined. The agent and `export push/status` ask again after
# each of these delays (seconds).
SUBSCRIBE_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
UPDATE_QUEUE_MAX = 16  # payloads waiting for validation; more are dropped with a status
UPDATE_QUEUE_MAX_BYTES = 8 * 1024 * 1024  # and at most this many bytes of them
DEFAULT_STATE_DIR = "/var/lib/reinforce-edge"
USER_STATE_SUBDIR = "reinforce-edge"  # under $XDG_STATE_HOME or ~/.local/state
STATE_CURRENT_FILE = "current.npz"
STATE_PREVIOUS_FILE = "previous.npz"
STATE_FILE = "state.json"  # highest accepted version and refused (rolled back) versions
MAX_REFUSED_VERSIONS = 256  # oldest refused versions beyond this are forgotten
DEFAULT_PROBATION_EPISODES = 5
RECENT_RETURNS = 20  # episodes kept per policy for the health baseline
# The status's `probation`: the health check of the version applied last in this process
# (docs/ota.md); `export rollout` counts a device done when it passed or was skipped
PROBATION_PENDING, PROBATION_PASSED = "pending", "passed"
PROBATION_SKIPPED, PROBATION_FAILED = "skipped", "failed"
PROBATION_STATES = (PROBATION_PENDING, PROBATION_PASSED, PROBATION_SKIPPED, PROBATION_FAILED)

# --- key rotation (issue 16): the trusted key set and the signed `keys` message -------------
KEYSET_FORMAT = "reinforce-edge/keyset"  # the message's "format"
KEYSET_STATE_FORMAT = "reinforce-edge/keyset-state"  # STATE_KEYS_FILE's "format"
KEYSET_SIGNATURE_DOMAIN = b"reinforce-edge/keyset-signature/v1\x00"  # never a policy's
STATE_KEYS_FILE = "keys.json"  # the key set applied last (overrides the configured keys)
MAX_TRUSTED_KEYS = 16  # keys a device trusts at once (each policy is tried against them all)
MAX_REVOKED_KEYS = 256  # revoked keys a device remembers (revocation is permanent)
MAX_KEYS_MESSAGE_BYTES = 64 * 1024  # a keys message of 16 + 256 keys is about 17 kB
KEY_ID_CHARS = 16  # a key id: the first 16 hex digits of sha256(32 raw public-key bytes)
