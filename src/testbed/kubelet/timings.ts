/**
 * The timers of a kubelet and of client-go's HTTP/2 transport, with their upstream defaults, and
 * scaling for short runs. Sources: k8s.io/component-helpers/apimachinery/lease/controller.go
 * (retries, backoff), pkg/kubelet/kubelet_node_status.go (NodeStatusUpdateRetry),
 * cmd/kubelet/app/server.go (heartbeat client timeout), k8s.io/apimachinery/pkg/util/net/http.go
 * (HTTP2_READ_IDLE_TIMEOUT_SECONDS, HTTP2_PING_TIMEOUT_SECONDS) and client-go's reflector.
 */

export interface KubeletTimings {
  /** nodeLeaseDurationSeconds (40 s): the duration the lease object claims. */
  leaseDurationMs: number;
  /** A quarter of the lease duration (10 s): the pause between two lease syncs. */
  leaseRenewIntervalMs: number;
  /** nodeStatusUpdateFrequency (10 s): the pause between two node status syncs. */
  nodeStatusUpdateMs: number;
  /** The heartbeat client's Timeout, min(nodeStatusUpdateFrequency, lease duration) = 10 s. */
  heartbeatTimeoutMs: number;
  /** backoffEnsureLease: the first wait after a failed GET or create (2 × 100 ms), doubled up to 7 s. */
  ensureLeaseBackoffMs: { initial: number; max: number };
  /** The reflector's backoff before it lists again after a broken watch: 800 ms doubling to 30 s. */
  reflectorBackoffMs: { initial: number; max: number };
}

/** client-go's HTTP/2 health check (Kubernetes 1.20 and later). */
export interface GoHealthCheck {
  /** A PING is sent after this long without reading any frame (30 s). */
  readIdleTimeoutMs: number;
  /** The connection is closed when no ACK for that PING arrives within this long (15 s). */
  pingTimeoutMs: number;
}

/** Immediate retries of a failed lease update, and of a failed node status update. */
export const LEASE_UPDATE_RETRIES = 5;
export const NODE_STATUS_UPDATE_RETRIES = 5;

/** The lease controller waits renewInterval × (1 + up to 4 %) between syncs. */
export const LEASE_RENEW_JITTER = 0.04;

/** Returns kubelet's default timings multiplied by `scale` (1 = the defaults). */
export function kubeletTimings(scale = 1): KubeletTimings {
  checkScale(scale);
  return {
    leaseDurationMs: 40_000 * scale,
    leaseRenewIntervalMs: 10_000 * scale,
    nodeStatusUpdateMs: 10_000 * scale,
    heartbeatTimeoutMs: 10_000 * scale,
    ensureLeaseBackoffMs: { initial: 200 * scale, max: 7_000 * scale },
    reflectorBackoffMs: { initial: 800 * scale, max: 30_000 * scale },
  };
}

/** Returns client-go's default HTTP/2 health check multiplied by `scale`. */
export function clientGoHealthCheck(scale = 1): GoHealthCheck {
  checkScale(scale);
  return { readIdleTimeoutMs: 30_000 * scale, pingTimeoutMs: 15_000 * scale };
}

function checkScale(scale: number): void {
  if (!(scale > 0) || !Number.isFinite(scale)) {
    throw new RangeError(`invalid timing scale ${scale}: expected a finite number above 0, such as 0.2 or 1`);
  }
}
