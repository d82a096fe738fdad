import torch


def test_seed_flow_runs_add_on_bob_and_gets_the_sum(seed):
    bob, client = seed
    x = client.search("#X")[0]
    y = client.search("#Y")[0]
    z = torch.add(x, y)
    assert z.shape == (5,) and z.location == "Bob"
    assert torch.equal(z.get(), torch.tensor([2.0, 3, 4, 5, 6]))
