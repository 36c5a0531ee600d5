//! `Ddp`'s primitives under `mpirun -n 2`: rank and world size, broadcast, all-reduce, barrier, the MPI
//! lifetime, and how a failing rank ends the job.

use std::time::Duration;

use fulgur::strategy::{Ddp, ReduceOp, Strategy};
use fulgur::Error;

use crate::support::{in_child, mpirun, passed, passed_on, test_name};

/// `Ddp::new()` in a child, which must run under [`mpirun`].
fn ddp() -> Ddp {
    assert!(
        in_child(),
        "a child test runs under `mpirun`, launched by its parent test"
    );
    Ddp::new().unwrap()
}

#[test]
fn two_ranks_see_their_rank_and_world_size() {
    mpirun(2, test_name!(child_rank_and_world_size))
        .run()
        .assert_passed();
}

#[test]
#[ignore = "child of `two_ranks_see_their_rank_and_world_size`, run under mpirun"]
fn child_rank_and_world_size() {
    let ddp = ddp();
    assert_eq!(ddp.world_size(), 2);
    assert!(ddp.rank() < 2);
    assert_eq!(ddp.is_global_zero(), ddp.rank() == 0);
    assert!(ddp.local_rank() < 2, "{ddp:?}");
    // Each rank contributes its rank: the two ranks are 0 and 1, not twice the same.
    let mut ranks = [ddp.rank() as f64];
    ddp.all_reduce(&mut ranks, ReduceOp::Sum).unwrap();
    assert_eq!(ranks, [1.0]);
    // A second `Ddp::new()` and a clone join the same world.
    let again = Ddp::new().unwrap();
    let clone = again.clone();
    assert_eq!((again.rank(), clone.world_size()), (ddp.rank(), 2));
    let mut one = [1.0];
    clone.all_reduce(&mut one, ReduceOp::Sum).unwrap();
    assert_eq!(one, [2.0]);
    passed(&ddp);
}

#[test]
fn broadcast_replaces_bytes_of_any_length_by_the_roots() {
    mpirun(2, test_name!(child_broadcast)).run().assert_passed();
}

/// The bytes rank `root` sends in the broadcast of `len` bytes.
fn pattern(len: usize, root: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + root * 7 + len) as u8).collect()
}

#[test]
#[ignore = "child of `broadcast_replaces_bytes_of_any_length_by_the_roots`, run under mpirun"]
fn child_broadcast() {
    let ddp = ddp();
    for root in [0, 1] {
        for len in [0, 1, 10 << 20] {
            // Every rank but the root starts with a length of its own: longer, shorter, or empty.
            let mut data = if ddp.rank() == root {
                pattern(len, root)
            } else {
                vec![0xAB; [3, 0, 1 << 20][ddp.rank() % 3 + len % 2]]
            };
            ddp.broadcast(&mut data, root).unwrap();
            assert_eq!(data.len(), len, "root {root}, rank {}", ddp.rank());
            assert!(
                data == pattern(len, root),
                "rank {} received other bytes than root {root} sent ({len} bytes)",
                ddp.rank()
            );
        }
    }
    // Rank 0's decision on both ranks.
    assert!(ddp.broadcast_bool(ddp.rank() == 0).unwrap());
    // A root that is not a rank is refused before any MPI call, on every rank.
    let err = ddp.broadcast(&mut vec![1], 2).unwrap_err().to_string();
    assert!(
        err.contains("rank 2") && err.contains("ranks 0 to 1"),
        "{err}"
    );
    passed(&ddp);
}

#[test]
fn all_reduce_sums_averages_and_takes_extremes_of_f64_and_f32() {
    mpirun(2, test_name!(child_all_reduce))
        .run()
        .assert_passed();
}

/// Rank-dependent values: rank 0 has `[1, -2, 0.5, 7]`, rank 1 `[3, -6, -0.5, 7]`.
fn values(rank: usize) -> [f64; 4] {
    let r = rank as f64;
    [1.0 + 2.0 * r, -2.0 - 4.0 * r, 0.5 - r, 7.0]
}

#[test]
#[ignore = "child of `all_reduce_sums_averages_and_takes_extremes_of_f64_and_f32`, run under mpirun"]
fn child_all_reduce() {
    let ddp = ddp();
    let expected = [
        (ReduceOp::Sum, [4.0, -8.0, 0.0, 14.0]),
        (ReduceOp::Mean, [2.0, -4.0, 0.0, 7.0]),
        (ReduceOp::Max, [3.0, -2.0, 0.5, 7.0]),
        (ReduceOp::Min, [1.0, -6.0, -0.5, 7.0]),
    ];
    for (op, want) in expected {
        let mut got = values(ddp.rank());
        ddp.all_reduce(&mut got, op).unwrap();
        assert_eq!(got, want, "f64 {op:?} on rank {}", ddp.rank());

        let mut got32 = values(ddp.rank()).map(|v| v as f32);
        ddp.all_reduce_f32(&mut got32, op).unwrap();
        assert_eq!(
            got32,
            want.map(|v| v as f32),
            "f32 {op:?} on rank {}",
            ddp.rank()
        );
    }
    // A gradient-sized buffer and an empty one.
    let mut big = vec![ddp.rank() as f32 + 1.0; 1 << 20];
    ddp.all_reduce_f32(&mut big, ReduceOp::Mean).unwrap();
    assert!(big.iter().all(|&v| v == 1.5));
    ddp.all_reduce(&mut [], ReduceOp::Sum).unwrap();
    passed(&ddp);
}

#[test]
fn barrier_waits_for_every_rank() {
    let dir = tempfile::tempdir().unwrap();
    mpirun(2, test_name!(child_barrier))
        .env("DDP_DIR", dir.path())
        .run()
        .assert_passed();
}

#[test]
#[ignore = "child of `barrier_waits_for_every_rank`, run under mpirun"]
fn child_barrier() {
    let ddp = ddp();
    let marker = std::path::PathBuf::from(std::env::var_os("DDP_DIR").unwrap()).join("rank-1");
    if ddp.rank() == 1 {
        // Late, so a rank 0 that did not wait would look before the file exists.
        std::thread::sleep(Duration::from_millis(500));
        std::fs::write(&marker, b"here").unwrap();
    }
    ddp.barrier().unwrap();
    assert!(
        marker.exists(),
        "rank {} left the barrier before rank 1 reached it",
        ddp.rank()
    );
    passed(&ddp);
}

#[test]
fn mpi_is_finalised_with_the_last_ddp_and_cannot_start_again() {
    mpirun(1, test_name!(child_finalise)).run().assert_passed();
}

#[test]
#[ignore = "child of `mpi_is_finalised_with_the_last_ddp_and_cannot_start_again`, run under mpirun"]
fn child_finalise() {
    use fulgur::strategy::mpi;
    let first = ddp();
    let second = first.clone();
    drop(first);
    assert!(!mpi::environment::is_finalized(), "a clone is still alive");
    assert_eq!(second.world_size(), 1);
    drop(second);
    assert!(mpi::environment::is_finalized());
    let err = Ddp::new().unwrap_err();
    assert!(
        matches!(&err, Error::Config { settings, .. } if settings == &["strategy"])
            && err.to_string().contains("after MPI was finalised"),
        "{err}"
    );
    passed_on(0, 1);
}

#[test]
fn ddp_joins_an_mpi_the_program_initialised_and_leaves_finalising_it_to_the_program() {
    mpirun(2, test_name!(child_program_owns_mpi))
        .run()
        .assert_passed();
}

#[test]
#[ignore = "child of `ddp_joins_an_mpi_the_program_initialised_and_leaves_finalising_it_to_the_program`, run under mpirun"]
fn child_program_owns_mpi() {
    use fulgur::strategy::mpi::{self, traits::*};
    assert!(in_child());
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Serialized).unwrap();
    let world = universe.world();
    let ddp = Ddp::new().unwrap();
    assert_eq!((ddp.rank(), ddp.world_size()), (world.rank() as usize, 2));
    let mut x = [1.0];
    ddp.all_reduce(&mut x, ReduceOp::Sum).unwrap();
    assert_eq!(x, [2.0]);
    drop(ddp);
    // The program's MPI outlives fulgur's last handle: the program finalises it.
    assert!(!mpi::environment::is_finalized());
    let mut sum = 0;
    world.all_reduce_into(&1, &mut sum, mpi::collective::SystemOperation::sum());
    assert_eq!(sum, 2);
    // A `Ddp` that outlives the program's MPI frees nothing when it drops after `MPI_Finalize`.
    let late = Ddp::new().unwrap();
    let rank = late.rank();
    drop(universe);
    assert!(mpi::environment::is_finalized());
    drop(late);
    passed_on(rank, 2);
}

/// The line the failing rank prints before it ends the job.
const FAILED: &str = "[fulgur] rank 1 of 2 failed: the data of rank 1 is bad; ending every rank";

#[test]
fn an_error_on_one_rank_ends_every_rank_with_that_error() {
    let run = mpirun(2, test_name!(child_error_on_rank_one)).run();
    run.assert_ended_every_rank();
    assert!(run.stderr.contains(FAILED), "{}", run.transcript());
    assert!(
        !run.stdout.contains("rank 0 left the barrier"),
        "{}",
        run.transcript()
    );
}

#[test]
#[ignore = "child of `an_error_on_one_rank_ends_every_rank_with_that_error`, run under mpirun"]
fn child_error_on_rank_one() {
    let ddp = ddp();
    if ddp.rank() == 1 {
        // Rank 0 is (very likely) in the barrier by now; it would wait there forever.
        std::thread::sleep(Duration::from_millis(200));
        ddp.fail(&Error::user("the data of rank 1 is bad"));
        // `fail` returned: what a trainer does next, return the error.
        return;
    }
    ddp.barrier().unwrap();
    println!("rank 0 left the barrier");
    passed(&ddp);
}

#[test]
fn a_panic_on_one_rank_ends_every_rank() {
    let run = mpirun(2, test_name!(child_panic_on_rank_one)).run();
    run.assert_ended_every_rank();
    for line in [
        "rank 1 panics on purpose",
        "[fulgur] rank 1 of 2 panicked; ending every rank",
    ] {
        assert!(
            run.stderr.contains(line),
            "no `{line}`\n{}",
            run.transcript()
        );
    }
    assert!(
        !run.stdout.contains("rank 0 finished"),
        "{}",
        run.transcript()
    );
}

#[test]
#[ignore = "child of `a_panic_on_one_rank_ends_every_rank`, run under mpirun"]
fn child_panic_on_rank_one() {
    let ddp = ddp();
    if ddp.rank() == 1 {
        std::thread::sleep(Duration::from_millis(200));
        panic!("rank 1 panics on purpose");
    }
    let mut x = [1.0];
    ddp.all_reduce(&mut x, ReduceOp::Sum).unwrap();
    println!("rank 0 finished the all-reduce");
    passed(&ddp);
}

#[test]
fn a_sigkill_of_one_rank_ends_every_rank() {
    let run = mpirun(2, test_name!(child_sigkill_on_rank_one))
        .timeout(Duration::from_secs(30))
        .run();
    run.assert_ended_every_rank();
    // mpirun's report of the kill, so that no other way of ending passes for it.
    assert!(run.stderr.contains("signal 9"), "{}", run.transcript());
    assert!(
        !run.stdout.contains("rank 0 left the barrier"),
        "{}",
        run.transcript()
    );
}

#[test]
#[ignore = "child of `a_sigkill_of_one_rank_ends_every_rank`, run under mpirun"]
fn child_sigkill_on_rank_one() {
    let ddp = ddp();
    if ddp.rank() == 1 {
        std::thread::sleep(Duration::from_millis(200));
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status();
        // Not reached unless `kill` failed.
        panic!("rank 1 is still alive after `kill -9 {pid}`");
    }
    ddp.barrier().unwrap();
    println!("rank 0 left the barrier");
    passed(&ddp);
}
