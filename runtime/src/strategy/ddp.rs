//! [`Ddp`]: data-parallel training over MPI, one process per rank, named after Lightning's `"ddp"`.
//!
//! Every collective goes through the MPI library the `mpi` crate was built against (Open MPI in CI), on
//! a private duplicate of `MPI_COMM_WORLD`, so that messages the program sends itself on the world
//! communicator never interleave with fulgur's.
//!
//! # Errors from MPI
//!
//! fulgur keeps MPI's default error handler, `MPI_ERRORS_ARE_FATAL`: an MPI call that fails (a peer
//! lost mid-collective, buffers whose lengths differ between ranks) prints MPI's own message and ends
//! every rank of the job. The `mpi` crate relies on that handler too: it does not check return codes.
//! So a failed collective never leaves a rank waiting, and the [`Result`]s of this module only carry
//! what fulgur checks before calling MPI: a root that is not a rank, `Ddp::new` after MPI was
//! finalised, an MPI library without the thread support fulgur needs.

use std::io::Write as _;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError, Weak};

use mpi::collective::SystemOperation;
use mpi::environment::{Threading, Universe};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Equivalence, Root};

use super::{ReduceOp, Strategy};
use crate::{Error, Result};

/// The values one MPI call moves at most: MPI counts are C `int`s.
const CHUNK_LEN: usize = 1 << 28;

/// The world every [`Ddp`] of this process shares; alive while one of them is.
static WORLD: Mutex<Weak<World>> = Mutex::new(Weak::new());

/// Data-parallel training over MPI: run one process per rank with `mpirun`, each process builds the
/// same trainer with `Ddp`, and each rank trains on its share of the data with gradients averaged
/// over the ranks.
///
/// ```no_run
/// # fn main() -> fulgur_runtime::Result<()> {
/// use fulgur_runtime::strategy::{Ddp, Strategy};
///
/// let ddp = Ddp::new()?; // MPI_Init, once per process
/// println!("rank {} of {}", ddp.rank(), ddp.world_size());
/// # Ok(())
/// # }
/// ```
///
/// Launch with `mpirun -n 2 target/release/examples/11-ddp`; in a container that runs as root, add
/// `--allow-run-as-root`, and `--oversubscribe` when there are fewer cores than ranks.
///
/// `Ddp` is a cheap handle: clones, and every later `Ddp::new()` while one is alive, share one MPI
/// world, so several trainers in one program can use it one after the other. `MPI_Finalize` runs when
/// the last handle drops, unless the program initialised MPI itself (then it finalises MPI, after
/// dropping every `Ddp`); MPI cannot start again after that, so a later `Ddp::new()` is an error.
///
/// With more than one rank, `Ddp::new` installs a panic hook that ends every rank (`MPI_Abort`)
/// after the panic message is printed, so that a panic on one rank cannot leave the others waiting
/// in a collective. This includes panics the program catches with `catch_unwind`.
#[derive(Clone)]
pub struct Ddp {
    world: Arc<World>,
    #[cfg(feature = "cuda")]
    nccl: Option<Arc<super::nccl::NcclGrads>>,
}

/// fulgur's communicator and the MPI environment it lives in.
struct World {
    // Declared before `_universe`: the communicator is freed before `MPI_Finalize` runs.
    channel: Mutex<Channel>,
    rank: usize,
    size: usize,
    local_rank: usize,
    /// `None` when the program initialised MPI itself and so finalises it.
    _universe: Option<Universe>,
}

/// What one collective needs, behind one lock: calls are serialised, as `MPI_THREAD_SERIALIZED` asks.
struct Channel {
    /// Freed on drop only while MPI runs: a program that finalised its own MPI before dropping its
    /// last `Ddp` would otherwise end in an MPI error.
    comm: ManuallyDrop<SimpleCommunicator>,
    scratch_f64: Vec<f64>,
    scratch_f32: Vec<f32>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        if mpi_running() {
            // SAFETY: `comm` is not used again; this is the only place that drops it.
            unsafe { ManuallyDrop::drop(&mut self.comm) }
        }
    }
}

// SAFETY: the communicator is an MPI handle (a pointer in Open MPI) that MPI lets any thread use when
// the library runs at `MPI_THREAD_SERIALIZED` or above, which `Ddp::new` checks, provided no two
// threads call MPI at once: every use goes through the `channel` mutex. The rest is plain data.
unsafe impl Send for World {}
unsafe impl Sync for World {}

impl std::fmt::Debug for Ddp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("Ddp");
        s.field("rank", &self.world.rank)
            .field("world_size", &self.world.size)
            .field("local_rank", &self.world.local_rank);
        #[cfg(feature = "cuda")]
        s.field("nccl", &self.nccl.is_some());
        s.finish()
    }
}

impl Ddp {
    /// Initialises MPI (`MPI_Init_thread`), or joins the world of the `Ddp`s still alive in this
    /// process or the MPI the program initialised itself, and duplicates the world communicator for
    /// fulgur's own traffic. Collective: every rank calls it, in the same order as its other MPI calls.
    ///
    /// Errors when MPI was already finalised, or when the MPI library cannot be called from any one
    /// thread at a time (`MPI_THREAD_SERIALIZED`). When MPI itself cannot start (no `mpirun` daemon
    /// reachable, for example), Open MPI prints why and ends the process.
    pub fn new() -> Result<Self> {
        let mut slot = WORLD.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(world) = slot.upgrade() {
            return Ok(Self::from_world(world));
        }
        if mpi::environment::is_finalized() {
            return Err(Error::config(
                "strategy",
                "`Ddp::new()` after MPI was finalised: MPI cannot start twice in one process; keep a \
                 `Ddp` (or a clone) alive for as long as the program trains, or create every trainer's \
                 strategy from the first `Ddp`",
            ));
        }
        let (universe, level) = match mpi::initialize_with_threading(Threading::Serialized) {
            Some((universe, level)) => (Some(universe), level),
            None => (None, mpi::environment::threading_support()),
        };
        if level < Threading::Serialized {
            return Err(Error::config(
                "strategy",
                format!(
                    "the MPI library provides thread support `{level:?}`, `Ddp` needs at least \
                     `Serialized` (MPI calls from any thread, one at a time): initialise MPI with \
                     `mpi::initialize_with_threading(Threading::Serialized)`, or use an MPI built \
                     with thread support"
                ),
            ));
        }
        let world = SimpleCommunicator::world();
        let comm = world.duplicate();
        comm.set_name("fulgur");
        let (rank, size) = (rank_index(comm.rank()), rank_index(comm.size()));
        let local_rank = local_rank_from_env(std::env::var("OMPI_COMM_WORLD_LOCAL_RANK").ok())
            .unwrap_or_else(|| rank_index(comm.split_shared(comm.rank()).rank()));
        if size > 1 {
            install_panic_hook();
        }
        // Every rank takes the same decisions and would print the same warnings: rank 0 prints them.
        crate::set_prints(rank == 0);
        let world = Arc::new(World {
            channel: Mutex::new(Channel {
                comm: ManuallyDrop::new(comm),
                scratch_f64: Vec::new(),
                scratch_f32: Vec::new(),
            }),
            rank,
            size,
            local_rank,
            _universe: universe,
        });
        *slot = Arc::downgrade(&world);
        Ok(Self::from_world(world))
    }

    fn from_world(world: Arc<World>) -> Self {
        Self {
            world,
            #[cfg(feature = "cuda")]
            nccl: None,
        }
    }

    /// This process's rank among the ranks on its machine: the GPU ordinal to use with one GPU per
    /// rank, `Cuda::try_build(ddp.local_rank(), seed)`. Open MPI's `OMPI_COMM_WORLD_LOCAL_RANK`
    /// when it is set, else the rank within the ranks that share memory with this one.
    pub fn local_rank(&self) -> usize {
        self.world.local_rank
    }

    fn channel(&self) -> MutexGuard<'_, Channel> {
        self.world
            .channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn check_root(&self, root: usize) -> Result<i32> {
        if root >= self.world.size {
            return Err(Error::config(
                "root",
                format!(
                    "broadcast from rank {root}, but the world has ranks 0 to {}",
                    self.world.size - 1
                ),
            ));
        }
        Ok(root as i32)
    }

    /// The NCCL communicator gradients go through, when [`Ddp::with_nccl`] set one up.
    #[cfg(feature = "cuda")]
    pub(crate) fn nccl_grads(&self) -> Option<&super::nccl::NcclGrads> {
        self.nccl.as_deref()
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn set_nccl(mut self, nccl: super::nccl::NcclGrads) -> Self {
        self.nccl = Some(Arc::new(nccl));
        self
    }
}

impl Strategy for Ddp {
    fn rank(&self) -> usize {
        self.world.rank
    }

    fn world_size(&self) -> usize {
        self.world.size
    }

    fn barrier(&self) -> Result<()> {
        self.channel().comm.barrier();
        Ok(())
    }

    /// The length goes first, so ranks may pass vectors of any length: every rank but `root` ends
    /// with a copy of `root`'s bytes.
    fn broadcast(&self, data: &mut Vec<u8>, root: usize) -> Result<()> {
        let root_rank = self.check_root(root)?;
        let channel = self.channel();
        let process = channel.comm.process_at_rank(root_rank);
        let mut len = data.len() as u64;
        process.broadcast_into(&mut len);
        if self.world.rank != root {
            let len = usize::try_from(len).map_err(|_| {
                Error::config(
                    "root",
                    format!("rank {root} broadcasts {len} bytes, more than this machine can hold"),
                )
            })?;
            data.clear();
            data.resize(len, 0);
        }
        for chunk in data.chunks_mut(CHUNK_LEN) {
            process.broadcast_into(chunk);
        }
        Ok(())
    }

    fn all_reduce(&self, values: &mut [f64], op: ReduceOp) -> Result<()> {
        let mut channel = self.channel();
        let Channel {
            comm, scratch_f64, ..
        } = &mut *channel;
        all_reduce_in_place(comm, values, scratch_f64, op);
        if op == ReduceOp::Mean {
            let world = self.world.size as f64;
            values.iter_mut().for_each(|v| *v /= world);
        }
        Ok(())
    }

    fn all_reduce_f32(&self, values: &mut [f32], op: ReduceOp) -> Result<()> {
        let mut channel = self.channel();
        let Channel {
            comm, scratch_f32, ..
        } = &mut *channel;
        all_reduce_in_place(comm, values, scratch_f32, op);
        if op == ReduceOp::Mean {
            let world = self.world.size as f32;
            values.iter_mut().for_each(|v| *v /= world);
        }
        Ok(())
    }

    /// With more than one rank, prints `[fulgur] rank R of N failed: <error>; ending every rank` and
    /// ends the job through `MPI_Abort` (exit code 1): never returns. Returns with one rank.
    fn fail(&self, error: &Error) {
        if self.world.size > 1 {
            abort_world(&format!(
                "rank {} of {} failed: {error}; ending every rank",
                self.world.rank, self.world.size
            ));
        }
    }

    #[cfg(feature = "cuda")]
    fn nccl(&self) -> Option<&super::nccl::NcclGrads> {
        self.nccl_grads()
    }
}

/// MPI's `MPI_SUM` etc. for `op`; the mean is a sum divided afterwards.
fn system_op(op: ReduceOp) -> SystemOperation {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => SystemOperation::sum(),
        ReduceOp::Max => SystemOperation::max(),
        ReduceOp::Min => SystemOperation::min(),
    }
}

/// `values` reduced over the ranks, in place: the `mpi` crate has no `MPI_IN_PLACE`, so the input is
/// copied to `scratch` first (a memory copy, small beside the network transfer).
fn all_reduce_in_place<T: Equivalence + Copy>(
    comm: &SimpleCommunicator,
    values: &mut [T],
    scratch: &mut Vec<T>,
    op: ReduceOp,
) {
    for chunk in values.chunks_mut(CHUNK_LEN) {
        scratch.clear();
        scratch.extend_from_slice(chunk);
        comm.all_reduce_into(&scratch[..], chunk, system_op(op));
    }
}

/// An MPI rank or size (never negative) as an index.
fn rank_index(value: i32) -> usize {
    usize::try_from(value).unwrap_or(0)
}

/// Open MPI's `OMPI_COMM_WORLD_LOCAL_RANK`, when it is a number.
fn local_rank_from_env(value: Option<String>) -> Option<usize> {
    value?.trim().parse().ok()
}

/// Whether MPI calls are allowed now (between `MPI_Init` and `MPI_Finalize`).
fn mpi_running() -> bool {
    mpi::environment::is_initialized() && !mpi::environment::is_finalized()
}

/// Prints `[fulgur] <message>` and ends every rank of the job with exit code 1.
fn abort_world(message: &str) -> ! {
    let _ = std::io::stdout().flush();
    eprintln!("[fulgur] {message}");
    let _ = std::io::stderr().flush();
    SimpleCommunicator::world().abort(1)
}

/// After the usual panic message, ends every rank while MPI runs: a panicking rank would otherwise
/// leave the others waiting in their next collective forever. Installed once per process.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if mpi_running() {
                let world = SimpleCommunicator::world();
                abort_world(&format!(
                    "rank {} of {} panicked; ending every rank",
                    world.rank(),
                    world.size()
                ));
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_is_a_sum_divided_afterwards() {
        use mpi::raw::AsRaw;
        let raw = |op| system_op(op).as_raw();
        assert_eq!(raw(ReduceOp::Mean), SystemOperation::sum().as_raw());
        assert_eq!(raw(ReduceOp::Sum), SystemOperation::sum().as_raw());
        assert_eq!(raw(ReduceOp::Max), SystemOperation::max().as_raw());
        assert_eq!(raw(ReduceOp::Min), SystemOperation::min().as_raw());
    }

    #[test]
    fn local_rank_is_read_from_open_mpi_when_it_is_a_number() {
        assert_eq!(local_rank_from_env(Some("3".into())), Some(3));
        assert_eq!(local_rank_from_env(Some(" 0\n".into())), Some(0));
        assert_eq!(local_rank_from_env(Some("x".into())), None);
        assert_eq!(local_rank_from_env(None), None);
    }

    #[test]
    fn chunks_fit_an_mpi_count() {
        assert!(CHUNK_LEN <= i32::MAX as usize);
    }
}
