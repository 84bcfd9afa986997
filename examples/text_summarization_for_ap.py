"""The reference platform's text-summarization fine-tuning script (Llama, summarization prompts),
line for line against the moreh Python package. Changed only where it must be: `import moreh`,
`moreh.option...` for `torch.moreh.option...`, moreh's model and optimizer classes, the shipped
JSONL data for the hub's cnn_dailymail, inputs passed as CPU tensors (the runtime places them),
and the flags the C++ trainer has (--dataset, --max-steps, --seed, --no-shuffle, the schedule,
--max-grad-norm, --gradient-accumulation-steps, --weight-decay, --exclude-bias-and-norm-from-decay;
evaluation and the run record are the C++ trainer's alone).
On the shipped data its losses equal examples/text_summarization_for_ap.cpp's (`moreh-run
train`), bit for bit, with the same flags.

    python3 examples/text_summarization_for_ap.py --model-name-or-path examples/llama-ap \\
        --batch-size 8 --block-size 64 --no-shuffle
"""
import copy
import itertools
import math
import sys
import torch

from loguru import logger
from datasets import load_dataset
from argparse import ArgumentParser
from transformers import LlamaTokenizer

import moreh
from moreh.models import AutoModelForCausalLM
from moreh.optim import AdamW, get_scheduler


# Compose pad token mask
def create_mask(input_ids, tokenizer):
    pad_token_ids = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return (input_ids != pad_token_ids).long()


# Mask pad tokens
def mask_pads(inputs, tokenizer, ignore_index=-100):
    idx_mask = create_mask(inputs, tokenizer)
    labels = copy.deepcopy(inputs)
    labels[~idx_mask.bool()] = ignore_index
    return labels


# Construct a formatted prompt
def create_prompt(prompt):
    full_prompt = f"[SUMMARIZE] {prompt['article']} [/SUMMARIZE]\n{prompt['highlights']}"
    return full_prompt


# Arguments
def parse_args():
    parser = ArgumentParser(description="LLaMA2 FineTuning")
    parser.add_argument("--model-name-or-path", type=str, help="model name or path")
    parser.add_argument("--dataset", type=str, default="examples/data/man_summaries.jsonl",
                        help="JSONL with 'article' and 'highlights'")
    parser.add_argument("--num-train-epochs", type=int, default=1, help="num training epochs")
    parser.add_argument("--batch-size", type=int, default=8, help="train bacth size")
    parser.add_argument("--block-size", type=int, default=1024, help="max input token length")
    parser.add_argument("--lr", type=float, default=0.00001, help="learning rate")
    parser.add_argument("--log-interval", type=int, default=10, help="log interval")
    parser.add_argument("--save-model-dir", type=str, default="./outputs", help="path to save model")
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (-1: all)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed, and init seed for a model without weights")
    parser.add_argument("--no-shuffle", action="store_true", help="keep the dataset order")
    parser.add_argument("--lr-scheduler-type", type=str, default="constant",
                        help="constant, constant_with_warmup, linear or cosine")
    parser.add_argument("--warmup-steps", type=int, default=0, help="steps of linear warmup from 0")
    parser.add_argument("--warmup-ratio", type=float, default=0.0,
                        help="warmup as a fraction of the training steps (when --warmup-steps is 0)")
    parser.add_argument("--max-grad-norm", type=float, default=1.0,
                        help="clip the gradients' global norm to this (0: off)")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1,
                        help="batches per optimizer step")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="AdamW's weight decay")
    parser.add_argument("--exclude-bias-and-norm-from-decay", action="store_true",
                        help="no weight decay on biases and norm weights")
    args = parser.parse_args()

    return args


def main(args):

    # Apply Advanced Parallelization
    moreh.option.enable_advanced_parallelization()

    # Load base model and tokenizer
    tokenizer = LlamaTokenizer.from_pretrained(args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path, seed=args.seed)

    # Set pad token
    tokenizer.pad_token_id = 0

    # Prepare the model for training on Accelerator
    model.cuda()
    model.train()

    # Load the dataset and set its format to PyTorch tensors
    dataset = load_dataset("json", data_files=args.dataset).with_format("torch")

    # Tokenize and prepare the input prompt
    def preprocess(prompt):
        input_ids = tokenizer(
            create_prompt(prompt),
            return_attention_mask=False,
            return_token_type_ids=False,
            padding="max_length",
            truncation=True,
            max_length=args.block_size,
        )['input_ids']
        return {"input_ids": input_ids}

    # Apply preprocess function
    dataset = dataset.map(preprocess)

    # Create a DataLoader for the training set
    train_dataloader = torch.utils.data.DataLoader(
        dataset["train"],
        batch_size=args.batch_size,
        shuffle=not args.no_shuffle,
        generator=torch.Generator().manual_seed(args.seed),
    )

    # Define AdamW optimizer
    optim = AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                  exclude_bias_and_norm=args.exclude_bias_and_norm_from_decay)

    # Calculate total training steps (one per gradient_accumulation_steps batches)
    accumulation = args.gradient_accumulation_steps
    total_step = math.ceil(len(train_dataloader) / accumulation) * args.num_train_epochs
    if 0 <= args.max_steps < total_step:
        total_step = args.max_steps

    # The learning-rate schedule (transformers' get_scheduler)
    warmup = args.warmup_steps if args.warmup_steps > 0 else math.ceil(total_step * args.warmup_ratio)
    scheduler = get_scheduler(args.lr_scheduler_type, optim, num_warmup_steps=warmup,
                              num_training_steps=total_step)

    # Start training
    global_step = 0
    for epoch in range(args.num_train_epochs):
        batches = iter(train_dataloader)
        while global_step < total_step:
            group = list(itertools.islice(batches, accumulation))
            if not group:
                break
            # The labels this step's batches count together (transformers' num_items_in_batch)
            labelled = [mask_pads(batch["input_ids"], tokenizer) for batch in group]
            num_items = sum(int((labels[:, 1:] != -100).sum()) for labels in labelled)
            losses = []
            for batch, labels in zip(group, labelled):
                input_ids = batch["input_ids"]
                attn_mask = create_mask(input_ids, tokenizer)
                outputs = model(
                    input_ids,
                    attention_mask=attn_mask,
                    labels=labels,
                    use_cache=False,
                    num_items_in_batch=num_items if accumulation > 1 else None,
                )
                loss = outputs[0]
                loss.backward()
                losses.append(loss)

            if args.max_grad_norm > 0:
                moreh.optim.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optim.step()
            scheduler.step()
            model.zero_grad(set_to_none=True)
            global_step += 1
            if global_step % args.log_interval == 0:
                loss_value = 0.0
                for loss in losses:
                    loss_value += loss.item()
                logger.info(f"[Step {global_step}/{total_step}] Loss: {loss_value}")

    print("Training Done")
    print("Saving Model...")

    # Save trained model
    model = model.to("cpu")
    model.save_pretrained(args.save_model_dir)
    print(f"Model saved in '{args.save_model_dir}'")


if __name__ == "__main__":

    args = parse_args()
    try:
        main(args)
    except moreh.OutOfMemoryError as e:
        print(f"RuntimeError: {e}", file=sys.stderr)
        raise SystemExit(1)
