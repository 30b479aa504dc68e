"""Train LeNet on MNIST and save it to ./lenet_models_1, as in OneFlow's tutorial.

    python lenet_train.py                   # the tutorial: 20 epochs, batch 100, SGD lr 0.1
    python lenet_train.py --max-steps 20    # a seconds-long smoke run
"""
import argparse
import contextlib
import json
import os
import signal
import sys
import time

import numpy as np
from tqdm import tqdm

import lenet
import multi_node
import oneflow_setup
import user_input
from lenet import flow
from stop_request import StopRequest

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--epochs", type=user_input.positive_int, default=20, help="passes over the training set (default: 20)")
parser.add_argument("--batch-size", type=user_input.positive_int, default=100, help="images per step (default: 100)")
parser.add_argument("--learning-rate", type=user_input.positive_float, default=0.1, help="SGD step size (default: 0.1)")
parser.add_argument("--log-interval", type=user_input.positive_int, default=20, help="print the loss every this many steps (default: 20)")
parser.add_argument("--seed", type=user_input.non_negative_int, default=0, help="seed of the initial weights, the shuffling and dropout (default: 0)")
parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the first GPU OneFlow 0.9 can run on, else cpu)")
parser.add_argument("--data-dir", default=".", help="folder of mnist.npz, downloaded there if missing (default: .)")
parser.add_argument("--model-dir", default="./lenet_models_1", help="folder to save the model to after every epoch, replacing it (default: ./lenet_models_1)")
parser.add_argument("--resume", action="store_true", help="continue the training saved in --model-dir (default: start afresh)")
parser.add_argument("--max-steps", type=user_input.positive_int, default=None, help="stop after this many steps in all, for smoke runs (default: no limit)")
parser.add_argument("--metrics", metavar="FILE", default=None, help="write each epoch's loss, test accuracy (%%) and images/s to this file, one JSON line per epoch, replacing it, or appended to with --resume (default: none)")


class TrainGraph(flow.nn.Graph):
    """The tutorial's train_job: forward with dropout, mean sparse softmax cross-entropy, backward, SGD, in one graph."""

    def __init__(self, model, optimizer):
        super().__init__()
        self.model = model
        self.add_optimizer(optimizer)

    def build(self, images, labels, weights, dropout_mask):
        logits = oneflow_setup.forward_in_parts(self.model, images, dropout_mask)  # (N, 10); on a CPU in two halves
        losses = flow.nn.functional.cross_entropy(logits, labels, reduction="none")  # (N,)
        loss = (losses * weights).sum() / weights.sum()  # mean over the real items; weights are 0 for padding
        loss.backward()
        return loss


class Interrupted(Exception):
    """Training stopped by a signal; args: the signal number, the epoch and step it stopped at, the last epoch saved."""


def check_finite(loss, epoch, step, learning_rate, model_dir):
    """Raise InputError if the loss has become NaN or infinite."""
    if not np.isfinite(loss):
        raise lenet.InputError(f"the loss became {loss} at epoch {epoch} step {step}: training diverged; "
                               f"try a lower --learning-rate than {learning_rate} "
                               f"(the last good model, if any, is still at {model_dir})")


def resume_state(training_state, model_dir, **flags):
    """Return training_state after checking that it exists and that flags (batch_size=..., ...) match those it was saved with."""
    if training_state is None:
        raise lenet.InputError(f"{model_dir} holds no training state to resume from (it was not saved at the end of "
                               f"an epoch by lenet_train.py)")
    for name, value in flags.items():
        if training_state["flags"][name] != value:
            raise lenet.InputError(f"--{name.replace('_', '-')} {value} differs from the "
                                   f"{training_state['flags'][name]} that {model_dir} was trained with")
    return training_state


def resume_hint(epoch, model_dir):
    """How to go on from epoch, saved in model_dir, after a node is lost: multi_node.lost_node_hint."""
    return (f"epoch {epoch}, the last complete one, is saved in {model_dir} on node 0: copy it to every node and run "
            f"the same command there with --resume")


def train(check_point, train_data, test_data, device, epochs, batch_size, learning_rate, log_interval, seed,
          model_dir, state=None, max_steps=None, stop=None, metrics=None):
    """Train check_point.model, saving it with its training state to model_dir after every epoch; return per-epoch records.

    With state (the training state that check_point.load(model_dir) returned, after resume_state), continue from it.
    `stop` (a stop_request.StopRequest) ends training after the current
    step by raising Interrupted. Each record is also written to the text file metrics, if given, as one JSON
    line when its epoch ends.
    """
    rng = np.random.default_rng(seed)  # shuffling and dropout; the same in every process
    flags = dict(batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    if state is None:
        check_point.init(seed)
    model, history = lenet.place(check_point.model, device), []
    optimizer = flow.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.0)
    done_epochs, step = 0, 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        done_epochs, step = state["epoch"], state["step"]
        multi_node.lost_node_hint(resume_hint(done_epochs, model_dir))
    graph, eval_graph = TrainGraph(model, optimizer), lenet.EvalGraph(model)
    steps_per_epoch = -(-len(train_data[0]) // batch_size)
    for epoch in range(done_epochs + 1, epochs + 1):
        start, images_seen, total_loss = time.perf_counter(), 0, 0.0
        batches = lenet.batches(batch_size, *train_data, rng=rng)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch}", leave=False, disable=not sys.stdout.isatty())
        for count, images, labels in bar:
            weights = (np.arange(batch_size) < count).astype(np.float32)
            loss = graph(*(lenet.to_tensor(a, device) for a in
                           (images, labels, weights, lenet.dropout_mask(rng, batch_size))))
            total_loss = total_loss + loss * count  # stays on the device: steps run asynchronously
            images_seen += count
            step += 1
            if step % log_interval == 0:
                value = float(lenet.to_numpy(loss))
                check_finite(value, epoch, step, learning_rate, model_dir)
                bar.write(f"epoch {epoch} step {step} loss {value:.4f}")
            if stop is not None and stop.signum is not None:
                bar.close()
                raise Interrupted(stop.signum, epoch, step, epoch - 1)
            if step == max_steps:
                break
        bar.close()
        mean_loss = float(lenet.to_numpy(total_loss / images_seen))
        check_finite(mean_loss, epoch, step, learning_rate, model_dir)
        seconds = time.perf_counter() - start
        accuracy = lenet.evaluate(eval_graph, *test_data, batch_size, device)
        complete = images_seen == len(train_data[0])  # a --max-steps run may end within an epoch: not resumable
        check_point.save(model_dir, dict(epoch=epoch, step=step, rng=rng.bit_generator.state, flags=flags,
                                         optimizer=optimizer.state_dict()) if complete else None)
        if complete:
            multi_node.lost_node_hint(resume_hint(epoch, model_dir))
        history.append(dict(epoch=epoch, loss=mean_loss, accuracy=accuracy, images_per_second=images_seen / seconds))
        print(f"epoch {epoch} loss {mean_loss:.4f} test accuracy {accuracy:.1f}% images/s {images_seen / seconds:.0f}")
        if metrics is not None:
            print(json.dumps(history[-1]), file=metrics, flush=True)  # flushed: a crash keeps the epochs done
        if step == max_steps:
            break
    return history


def main(argv=None):
    args = parser.parse_args(argv)
    if flow.env.get_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # under the launcher, the first process alone prints the log
    stop = StopRequest(at_once=flow.env.get_world_size() > 1)
    stop.install()
    check_point = lenet.CheckPoint(lenet.LeNet())
    flags = dict(batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed)

    def check():
        """What this process will train with, read and checked before the first step (multi_node.agreed)."""
        device, description = lenet.choose_device(args.device)
        train_data, test_data, _, found = lenet.load_mnist(args.data_dir, progress=sys.stderr.isatty())
        read = {"device": device.type, "mnist.npz": multi_node.digest(*train_data, *test_data)}
        state = None
        if args.resume:
            state = resume_state(check_point.load(args.model_dir), args.model_dir, **flags)
            read["model folder"] = multi_node.model_digest(check_point.model)
        metrics = None
        if args.metrics and flow.env.get_rank() == 0:
            try:
                metrics = open(args.metrics, "a" if args.resume else "w")
            except OSError as e:
                raise lenet.InputError(f"cannot write {args.metrics} ({e.strerror or e})") from None
        return (device, description, train_data, test_data, found, state, metrics), read

    try:
        # Every flag but the paths, which may differ from node to node, must be the same in every process.
        same = {name: value for name, value in vars(args).items() if name not in ("data_dir", "model_dir", "metrics")}
        device, description, train_data, test_data, found, state, metrics = multi_node.agreed(check, same)
        print(f"device {description}")
        if found:
            print(found)
        with metrics if metrics is not None else contextlib.nullcontext():
            history = train(check_point, train_data, test_data, device, args.epochs, args.batch_size,
                            args.learning_rate, args.log_interval, args.seed, args.model_dir, state, args.max_steps,
                            stop, metrics)
    except lenet.InputError as e:
        sys.exit(f"error: {e}")
    except Interrupted as e:
        signum, epoch, step, saved = e.args
        print(f"interrupted by {signal.Signals(signum).name} at epoch {epoch} step {step}; " + (
              f"epoch {saved}, the last complete one, is saved in {args.model_dir}; continue with the same command "
              f"and --resume" if saved else "nothing is saved yet, as no epoch was complete; run the command again"),
              file=sys.stderr)
        sys.exit(128 + signum)
    if history:
        print(f"model saved to {args.model_dir}")
    else:
        print(f"{args.model_dir} is already trained for {args.epochs} epochs")


if __name__ == "__main__":
    main()
