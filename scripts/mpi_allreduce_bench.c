/*
 * The peer of `tessera bench collectives`: the MPI library's own MPI_Allreduce (float sum, in
 * place), measured exactly as crates/tessera-bench/src/collectives.rs measures all_sum, with
 * the same JSON lines, so the two can be compared case by case.
 *
 * Sizes from 4 bytes up to --max-bytes (default 256 MiB), growing by 4x. Per size: one warm-up
 * and R timed repetitions (--repeats, default 20; at most 5 from 64 MiB up). Each repetition
 * refills the buffer with 1.0 (untimed), meets the other ranks at a barrier, then times one
 * MPI_Allreduce. A repetition's time is the slowest rank's (an MPI_MAX all-reduce of the
 * per-repetition times after the loop); the reported time is the median over repetitions.
 * algbw = bytes / time; busbw = algbw * 2(n-1)/n (as nccl-tests). Latency lines (us) for sizes
 * up to 64 KiB, algbw and busbw lines (GB/s) from 64 KiB up. Rank 0 prints.
 *
 *   scripts/build-mpi-bench.sh
 *   mpirun -n 3 .cache/mpi-bench/mpi_allreduce_bench [--max-bytes B] [--repeats R] [--label L]
 *
 * --label names the backend in the case names (default "openmpi"):
 *   {"case": "all_sum/openmpi/n3/1MiB/busbw", "value": 1.2345, "unit": "GB/s"}
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void size_name(size_t b, char *out, size_t cap) {
    if (b >= (size_t)1 << 20)
        snprintf(out, cap, "%zuMiB", b >> 20);
    else if (b >= (size_t)1 << 10)
        snprintf(out, cap, "%zuKiB", b >> 10);
    else
        snprintf(out, cap, "%zuB", b);
}

static void emit(const char *label, int n, const char *size, const char *what, double value,
                 const char *unit) {
    printf("{\"case\": \"all_sum/%s/n%d/%s/%s\", \"value\": %.4f, \"unit\": \"%s\"}\n", label, n,
           size, what, value, unit);
}

static void usage_exit(int rank, const char *msg) {
    if (rank == 0)
        fprintf(stderr,
                "%s\nusage: mpirun -n N mpi_allreduce_bench [--max-bytes B] [--repeats R] "
                "[--label NAME]\n",
                msg);
    MPI_Finalize();
    exit(2);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);

    size_t max_bytes = (size_t)256 << 20;
    long repeats = 20;
    const char *label = "openmpi";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            continue; /* always JSON; accepted for symmetry with `tessera bench` */
        if (i + 1 >= argc)
            usage_exit(rank, "missing value");
        if (strcmp(argv[i], "--max-bytes") == 0)
            max_bytes = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--repeats") == 0)
            repeats = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--label") == 0)
            label = argv[++i];
        else
            usage_exit(rank, "unknown argument");
    }
    if (max_bytes < 4)
        max_bytes = 4;
    if (repeats < 1)
        repeats = 1;

    float *buf = malloc(max_bytes);
    double *times = malloc(sizeof(double) * (size_t)repeats);
    double *slowest = malloc(sizeof(double) * (size_t)repeats);
    if (!buf || !times || !slowest) {
        fprintf(stderr, "rank %d: out of memory for %zu bytes\n", rank, max_bytes);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }

    for (size_t bytes = 4; bytes <= max_bytes; bytes *= 4) {
        size_t elems = bytes / 4;
        if (elems > (size_t)0x7fffffff) {
            if (rank == 0)
                fprintf(stderr, "%zu bytes: more elements than an MPI count holds\n", bytes);
            break;
        }
        /* Fewer repetitions for the big sizes: they are long and steady. */
        long reps = bytes >= ((size_t)64 << 20) ? (repeats < 5 ? repeats : 5) : repeats;
        for (long rep = 0; rep <= reps; rep++) {
            /* A fresh input (untimed), reduced in place. */
            for (size_t i = 0; i < elems; i++)
                buf[i] = 1.0f;
            MPI_Barrier(MPI_COMM_WORLD);
            double t = MPI_Wtime();
            MPI_Allreduce(MPI_IN_PLACE, buf, (int)elems, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            double dt = MPI_Wtime() - t;
            if (rep > 0)
                times[rep - 1] = dt;
            if (buf[0] != (float)n || buf[elems - 1] != (float)n) {
                fprintf(stderr, "rank %d: wrong sum %g at %zu bytes (want %d)\n", rank,
                        (double)buf[0], bytes, n);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
        }
        /* The slowest rank's time per repetition; the median of those. */
        MPI_Allreduce(times, slowest, (int)reps, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        qsort(slowest, (size_t)reps, sizeof(double), cmp_double);
        double secs = slowest[reps / 2];
        if (rank == 0) {
            char size[32];
            size_name(bytes, size, sizeof size);
            double algbw = (double)bytes / secs / 1e9;
            double busbw = algbw * 2.0 * (n - 1) / n;
            if (bytes <= ((size_t)64 << 10))
                emit(label, n, size, "latency", secs * 1e6, "us");
            if (bytes >= ((size_t)64 << 10)) {
                emit(label, n, size, "algbw", algbw, "GB/s");
                emit(label, n, size, "busbw", busbw, "GB/s");
            }
            fflush(stdout);
        }
        if (bytes > max_bytes / 4)
            break; /* the next size would pass max_bytes (or overflow) */
    }

    free(buf);
    free(times);
    free(slowest);
    MPI_Finalize();
    return 0;
}
